import { gatherDecision } from './gather-decision';

describe('gatherDecision (the gather window)', () => {
  const approved = ['a', 'b', 'c'];

  it('starts at once when every approved site is connected, or maxSites are', () => {
    expect(gatherDecision(['a', 'b', 'c'], approved, 10, 0, 10_000)).toEqual({ start: true, absent: [] });
    expect(gatherDecision(['a', 'b'], approved, 2, 0, 10_000)).toEqual({ start: true, absent: [] });
  });

  it('waits for an approved site that is reconnecting, until the window has passed, then starts without it and names it', () => {
    expect(gatherDecision(['a', 'b'], approved, 10, 3_000, 10_000)).toEqual({ start: false, absent: [] });
    expect(gatherDecision(['a', 'b'], approved, 10, 9_999, 10_000)).toEqual({ start: false, absent: [] });
    expect(gatherDecision(['a', 'b'], approved, 10, 10_000, 10_000)).toEqual({ start: true, absent: ['c'] });
  });

  it('with a window of 0 starts as soon as the plan allows (the behaviour before the window)', () => {
    expect(gatherDecision(['a'], approved, 10, 0, 0)).toEqual({ start: true, absent: ['b', 'c'] });
  });
});
