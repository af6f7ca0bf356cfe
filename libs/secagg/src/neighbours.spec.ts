import { buildNeighbourhoods, neighbourDegree } from './neighbours';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `site-${i}`);

describe('neighbourhood graph', () => {
  it('is symmetric, loop-free and regular with degree min(k, n-1) (k-1 when k and n are both odd), n = 2..60', () => {
    for (let n = 2; n <= 60; n++) {
      for (const k of [2, 3, 4, 5, 6, 8, 11]) {
        const graph = buildNeighbourhoods(ids(n), k, 7);
        const degree = neighbourDegree(n, k);
        const expected = k >= n - 1 ? n - 1 : k % 2 === 1 && n % 2 === 1 ? k - 1 : k;
        expect(degree).toBe(expected);
        expect(Object.keys(graph).sort()).toEqual(ids(n).sort());
        // One expect per graph (not per node) keeps these 413 graphs fast.
        const bad = Object.entries(graph).filter(
          ([id, list]) =>
            list.length !== degree ||
            new Set(list).size !== list.length ||
            list.includes(id) ||
            list.join() !== [...list].sort().join() ||
            list.some((other) => !graph[other].includes(id)),
        );
        expect({ n, k, bad }).toEqual({ n, k, bad: [] });
      }
    }
  });

  it('is a complete graph when k >= n-1', () => {
    const graph = buildNeighbourhoods(['c', 'a', 'b', 'd'], 3, 1);
    expect(graph).toEqual({ a: ['b', 'c', 'd'], b: ['a', 'c', 'd'], c: ['a', 'b', 'd'], d: ['a', 'b', 'c'] });
    expect(buildNeighbourhoods(['c', 'a', 'b', 'd'], 10, 2)).toEqual(graph);
  });

  it('depends only on the id set and the seed; another seed gives another graph', () => {
    for (let n = 9; n <= 60; n++) {
      const a = buildNeighbourhoods(ids(n), 4, 'run-1:3');
      expect(buildNeighbourhoods([...ids(n)].reverse(), 4, 'run-1:3')).toEqual(a);
      expect(buildNeighbourhoods(ids(n), 4, 'run-1:4')).not.toEqual(a);
    }
  });

  it('refuses bad inputs', () => {
    expect(() => buildNeighbourhoods(['a'], 2, 1)).toThrow(/at least 2 sites, got 1/);
    expect(() => buildNeighbourhoods(['a', 'b'], 1, 1)).toThrow(/k must be an integer >= 2, got 1/);
    expect(() => buildNeighbourhoods(['a', 'b', 'a'], 2, 1)).toThrow(/unique/);
    expect(() => buildNeighbourhoods(['a', 'B'], 2, 1)).toThrow(/site id "B" must be/);
  });
});
