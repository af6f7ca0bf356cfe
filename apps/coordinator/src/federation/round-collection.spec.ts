import { namedTensor } from '@histofed/fl-core';
import { checkContributionWeights } from './contribution-checks';
import { RoundCollection } from './round-collection';

const base = [namedTensor('w', [2], [0, 0]), namedTensor('b', [1], [0])];
const open = (participants: string[], deadlineMs = 60_000) =>
  new RoundCollection('run', 1, 'round', new Set(participants), 'h'.repeat(64), base, 0, deadlineMs);

describe('round collection', () => {
  it('settles once every participant answered or dropped, results sorted by site', async () => {
    const c = open(['b', 'a', 'c']);
    c.accept('b', 5, base, { accuracy: 1 });
    c.markMissing('c', 'site disconnected');
    c.accept('a', 3, base, {});
    const outcome = await c.outcome;
    expect(outcome.results.map((r) => [r.siteId, r.numSamples])).toEqual([
      ['a', 3],
      ['b', 5],
    ]);
    expect(outcome.missing).toEqual({ c: 'site disconnected' });
  });

  it('refuses outsiders, duplicates, dropped sites and anything after closing', () => {
    const c = open(['a', 'b', 'c']);
    expect(c.refusal('x')).toBe('site x is not a participant of round 1');
    c.accept('a', 1, base, {});
    expect(c.refusal('a')).toBe('site a already contributed to round 1');
    c.markMissing('b', 'update rejected: bad shape');
    expect(c.refusal('b')).toBe('site b left round 1: update rejected: bad shape');
    c.close('stopped');
    expect(c.refusal('c')).toBe('round 1 of run run is closed');
  });

  it('closes at the deadline with the sites that did not answer', async () => {
    const c = open(['a', 'b'], 20);
    c.accept('a', 1, base, {});
    const outcome = await c.outcome;
    expect(outcome.results.map((r) => r.siteId)).toEqual(['a']);
    expect(outcome.missing).toEqual({ b: 'deadline passed before the site answered' });
  });
});

describe('round collection: acceptance is atomic with respect to closing', () => {
  afterEach(() => jest.useRealTimers());

  it('a contribution being recorded when the deadline passes is in the outcome, and no new one is admitted', async () => {
    jest.useFakeTimers();
    const c = open(['a', 'b', 'c'], 1000);
    expect(c.reserve('a')).toBeNull();
    // The deadline passes while 'a' is written to the database.
    jest.advanceTimersByTime(1000);
    expect(c.reserve('b')).toBe('round 1 of run run is closed');
    c.markMissing('c', 'site disconnected');
    let settled = false;
    void c.outcome.then(() => (settled = true));
    await Promise.resolve();
    expect(settled).toBe(false);
    c.commit('a', 4, base, {});
    const outcome = await c.outcome;
    expect(outcome.results.map((r) => r.siteId)).toEqual(['a']);
    expect(outcome.missing).toEqual({ b: 'deadline passed before the site answered', c: 'deadline passed before the site answered' });
  });

  it('a contribution that could not be recorded is released: missing with the reason, or free to try again', async () => {
    const c = open(['a', 'b']);
    expect(c.reserve('a')).toBeNull();
    expect(c.reserve('a')).toBe('site a already contributed to round 1');
    c.release('a');
    expect(c.refusal('a')).toBeNull();
    expect(c.reserve('b')).toBeNull();
    c.release('b', 'update could not be recorded: disk full');
    expect(c.refusal('b')).toBe('site b left round 1: update could not be recorded: disk full');
    c.accept('a', 1, base, {});
    expect((await c.outcome).missing).toEqual({ b: 'update could not be recorded: disk full' });
    expect(() => c.commit('b', 1, base, {})).toThrow(/no reserved contribution/);
  });
});

describe('contribution checks', () => {
  it('accepts a well-formed update and names what is wrong otherwise', () => {
    const ok = [namedTensor('w', [2], [1, 1]), namedTensor('b', [1], [1])];
    expect(checkContributionWeights(base, base, ok, 0)).toBeNull();
    expect(checkContributionWeights(base, base, [ok[0]], 0)).toBe('update: expected 2 tensors, got 1');
    expect(checkContributionWeights(base, base, [namedTensor('w', [1, 2], [1, 1]), ok[1]], 0)).toMatch(/"w" should have shape \[2\], got \[1, 2\]/);
    expect(checkContributionWeights(base, base, [namedTensor('w', [2], [1, Infinity]), ok[1]], 0)).toBe(
      'update: tensor "w" holds a non-finite value at index 1',
    );
    expect(checkContributionWeights(base, base, ok, 1.5)).toMatch(/norm 1\.7321 exceeds the run's bound 1\.5/);
    expect(checkContributionWeights(base, base, ok, 2)).toBeNull();
  });
});
