import { BadRequestException } from '@nestjs/common';
import { RUN_CONFIG_DESCRIPTIONS, runConfigJsonSchema } from './run-config.descriptions';
import { runConfigInputSchema } from './run-config.schema';
import { ZodBodyPipe } from './zod-body.pipe';

const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BadRequestException);
    return { message: (e as BadRequestException).message, body: (e as BadRequestException).getResponse() as { message: string; issues: { path: unknown[]; message: string }[] } };
  }
  throw new Error('not refused');
};

describe('the run config as the dashboard\'s form sees it (issue 17)', () => {
  it('is the API\'s own schema as JSON schema, every option with a description (its unit), most with a default', () => {
    const schema = runConfigJsonSchema() as { properties: Record<string, { description?: string; default?: unknown }> };
    const fields = Object.keys(runConfigInputSchema.in.shape);
    expect(Object.keys(schema.properties)).toEqual(fields);
    expect(fields.filter((f) => !RUN_CONFIG_DESCRIPTIONS[f])).toEqual([]);
    expect(Object.keys(RUN_CONFIG_DESCRIPTIONS).filter((f) => !fields.includes(f))).toEqual([]);
    for (const f of fields) expect([f, schema.properties[f].description]).toEqual([f, RUN_CONFIG_DESCRIPTIONS[f]]);
    expect(schema.properties.rounds.default).toBe(3);
    expect(schema.properties.roundTimeoutSeconds.description).toMatch(/Seconds/);
  });

  it('refuses a bad body with each problem at its field (and the same message as before)', () => {
    const pipe = new ZodBodyPipe(runConfigInputSchema, 'run config');
    const r = refusal(() => pipe.transform({ rounds: 0, minSites: 5, maxSites: 2, colour: 'red' }));
    expect(r.message).toMatch(/^run config: /);
    expect(r.body.message).toBe(r.message);
    expect(r.body.issues).toEqual(expect.arrayContaining([
      { path: ['rounds'], message: expect.stringMatching(/>=\s*1/) },
      { path: [], message: expect.stringMatching(/colour/) },
    ]));
    const nested = refusal(() => pipe.transform({ secureAggregation: { neighbours: 2, threshold: 5 } }));
    expect(nested.body.issues).toEqual(expect.arrayContaining([{ path: ['secureAggregation', 'threshold'], message: expect.any(String) }]));
    const unstorable = refusal(() => pipe.transform({ name: 'a\u0000b' }));
    expect(unstorable.body.issues).toEqual([{ path: ['name'], message: expect.stringMatching(/NUL/) }]);
  });
});
