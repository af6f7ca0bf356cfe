import { BadRequestException } from '@nestjs/common';
import { MAX_ROUND, RoundParamPipe, SiteIdParamPipe } from './param.pipes';
import { runConfigInputSchema } from './run-config.schema';
import { findUnstorableText, isStorableText } from './storable-text';
import { ZodBodyPipe } from './zod-body.pipe';

const refusal = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BadRequestException);
    return (e as BadRequestException).message;
  }
  throw new Error('not refused');
};

describe('admin API input the database could not store', () => {
  it('round numbers in paths: 0 to 2^31 - 1, digits only', () => {
    const pipe = new RoundParamPipe();
    expect(pipe.transform('0')).toBe(0);
    expect(pipe.transform('17')).toBe(17);
    expect(pipe.transform(String(MAX_ROUND))).toBe(MAX_ROUND);
    for (const bad of ['100000000000000000000', '1e20', String(MAX_ROUND + 1), '9999999999', '-1', '1.5', '', ' 1', '0x10', 'NaN']) {
      expect([bad, refusal(() => pipe.transform(bad))]).toEqual([bad, 'round must be a whole number from 0 to 2147483647']);
    }
  });

  it('site ids in paths are checked as enrollment checks them', () => {
    const pipe = new SiteIdParamPipe();
    expect(pipe.transform('site-1')).toBe('site-1');
    for (const bad of ['\u0000', 'a\u0000', '\ud800', 'Site-1', '-x', 'x'.repeat(64), '', '../x']) {
      expect(refusal(() => pipe.transform(bad))).toMatch(/^site id must be 1-63 chars/);
    }
  });

  it('strings and keys with NUL or a lone surrogate are refused with the field, anywhere in a body', () => {
    expect(isStorableText('plain, accents é, emoji \ud83d\ude00')).toBe(true);
    for (const bad of ['a\u0000b', '\ud800', 'x\udfff', '\ude00\ud83d', 'end\ud83d']) expect([bad, isStorableText(bad)]).toEqual([bad, false]);
    expect(findUnstorableText({ a: [1, 'ok', { b: 'x\u0000' }] })).toBe('a.2.b');
    expect(findUnstorableText({ opts: { ['k\ud800']: 1 } })).toBe('opts.(a key)');
    expect(findUnstorableText('\u0000')).toBe('(root)');
    expect(findUnstorableText({ a: 'fine', b: [null, 1, true] })).toBeNull();
    // Deep nesting does not overflow the stack.
    let deep: unknown = 'x\u0000';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(findUnstorableText(deep)).toMatch(/^(0\.)+…(\.0)+$/);
    expect(findUnstorableText(deep)?.length).toBe(201);

    const pipe = new ZodBodyPipe(runConfigInputSchema, 'run config');
    expect(refusal(() => pipe.transform({ name: 'a\u0000b' }))).toBe('run config: name: must not contain NUL (U+0000) or unpaired surrogate characters');
    expect(refusal(() => pipe.transform({ strategyOptions: { ['eta\u0000']: 1 } }))).toMatch(/^run config: strategyOptions\.\(a key\): must not contain NUL/);
    expect(pipe.transform({ name: 'run \ud83d\ude00' }).name).toBe('run \ud83d\ude00');
    // The schema holds the rule too, for any other caller.
    expect(runConfigInputSchema.safeParse({ name: 'lone \ud800' }).success).toBe(false);
  });
});
