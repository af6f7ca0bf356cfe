import { NamedTensor, WeightSet, namedTensor } from '@histofed/fl-core';
import { FedAvg } from './fedavg';
import { CoordinateMedian, TrimmedMean, medianInPlace, selectInPlace, trimmedMeanInPlace } from './robust';
import { SiteResult } from './strategy';

const model = (w: number[], b: number[]): NamedTensor[] => [namedTensor('w', [2, 2], w), namedTensor('b', [1], b)];
const site = (siteId: string, weights: WeightSet, numSamples = 10): SiteResult => ({ siteId, numSamples, weights, metrics: {} });
const values = (ws: WeightSet) => ws.map((t) => Array.from(t.values));
const snapshot = (results: readonly SiteResult[]) => results.map((r) => values(r.weights));

const global = model([0, 0, 0, 0], [0]);
// Five sites, values deliberately unsorted across sites. Per coordinate, sorted:
//   w[0]: 1 2 3 7 100   -> median 3,  trimmed mean (drop 1 each end) (2+3+7)/3 = 4
//   w[1]: 10 20 30 40 50 -> 30, 30
//   w[2]: -100 -4 -3 -2 -1 -> -3, -3
//   w[3]: 0 0 0 0 5      -> 0, 0
//   b[0]: 0 .25 .5 .75 1 -> .5, .5
const five = [
  site('a', model([7, 10, -1, 0], [0.5])),
  site('b', model([100, 20, -2, 0], [0.25]), 1000),
  site('c', model([1, 30, -3, 0], [0.75])),
  site('d', model([3, 40, -4, 5], [1])),
  site('e', model([2, 50, -100, 0], [0])),
];

describe('CoordinateMedian', () => {
  const median = new CoordinateMedian();

  it('takes the per-coordinate median of 5 sites, ignoring sample counts', () => {
    const out = median.aggregate(global, five);
    expect(values(out.weights)).toEqual([[3, 30, -3, 0], [0.5]]);
    expect(out.weights.map((t) => [t.name, t.shape])).toEqual([
      ['w', [2, 2]],
      ['b', [1]],
    ]);
    expect(out.state).toBeUndefined();
  });

  it('with an even number of sites takes the mean of the two middle values; one site is itself', () => {
    const four = [
      site('a', model([1, 0, 5, -1], [1])),
      site('b', model([4, 0, 5, -3], [2])),
      site('c', model([2, 1, 5, -2], [3])),
      site('d', model([10, 1, 5, -4], [4])),
    ];
    // w[0]: 1 2 4 10 -> 3; w[1]: 0 0 1 1 -> 0.5; w[2]: 5; w[3]: -4 -3 -2 -1 -> -2.5; b: 1 2 3 4 -> 2.5
    expect(values(median.aggregate(global, four).weights)).toEqual([[3, 0.5, 5, -2.5], [2.5]]);
    expect(values(median.aggregate(global, four.slice(0, 2)).weights)).toEqual([[2.5, 0, 5, -2], [1.5]]);
    expect(values(median.aggregate(global, four.slice(0, 1)).weights)).toEqual([[1, 0, 5, -1], [1]]);
  });
});

describe('TrimmedMean', () => {
  it('drops floor(0.2 n) values at each end by default (5 sites: one each end), unweighted', () => {
    const out = new TrimmedMean().aggregate(global, five);
    expect(values(out.weights)).toEqual([[4, 30, -3, 0], [0.5]]);
    expect(out.state).toBeUndefined();
  });

  it('trims floor(trim * n): 4 sites at 0.2 drop none (plain mean), at 0.25 drop one each end', () => {
    const four = [
      site('a', model([1, 0, 0, 0], [1])),
      site('b', model([4, 0, 0, 0], [2])),
      site('c', model([2, 0, 0, 0], [3])),
      site('d', model([10, 0, 0, 0], [6])),
    ];
    expect(new TrimmedMean().dropCount(4)).toBe(0);
    expect(values(new TrimmedMean().aggregate(global, four).weights)).toEqual([[4.25, 0, 0, 0], [3]]);
    expect(values(new TrimmedMean({ trim: 0.25 }).aggregate(global, four).weights)).toEqual([[3, 0, 0, 0], [2.5]]);
    expect(values(new TrimmedMean({ trim: 0 }).aggregate(global, five).weights)[0][0]).toBeCloseTo(113 / 5, 5);
  });

  it('validates trim', () => {
    expect(() => new TrimmedMean({ trim: 0.5 })).toThrow(/option "trim" must be a number in \[0, 0.5\), got 0.5/);
    expect(() => new TrimmedMean({ trim: -0.1 })).toThrow(/"trim"/);
    expect(() => new TrimmedMean({ trim: NaN })).toThrow(/"trim"/);
  });
});

describe('robust aggregation', () => {
  it('one site sending 1e6 everywhere barely moves median and trimmed mean, but moves FedAvg', () => {
    const honest = Array.from({ length: 9 }, (_, i) => site(`s${i}`, model([1 + (i - 4) * 0.01, 2, 3, 4], [5])));
    const results = [...honest, site('evil', model([1e6, 1e6, 1e6, 1e6], [1e6]))];
    for (const strategy of [new CoordinateMedian(), new TrimmedMean()]) {
      const [w, b] = values(strategy.aggregate(global, results).weights);
      expect(Math.abs(w[0] - 1)).toBeLessThan(0.02);
      expect(w.slice(1)).toEqual([2, 3, 4].map((x) => expect.closeTo(x, 6)));
      expect(b[0]).toBeCloseTo(5, 6);
    }
    const fedavg = values(new FedAvg().aggregate(global, results).weights);
    expect(fedavg[0][0]).toBeGreaterThan(9e4);
  });

  it('does not mutate the site weights or the global model', () => {
    const before = snapshot(five);
    const g = values(global);
    new CoordinateMedian().aggregate(global, five);
    new TrimmedMean({ trim: 0.4 }).aggregate(global, five);
    expect(snapshot(five)).toEqual(before);
    expect(values(global)).toEqual(g);
  });

  it('refuses empty rounds and layouts that differ from the global model, naming site and tensor', () => {
    for (const s of [new CoordinateMedian(), new TrimmedMean()]) {
      expect(() => s.aggregate(global, [])).toThrow(new RegExp(`${s.name}: no results to aggregate`));
      const badShape = [namedTensor('w', [4], [1, 1, 1, 1]), namedTensor('b', [1], [1])];
      expect(() => s.aggregate(global, [five[0], site('x', badShape)])).toThrow(
        new RegExp(`${s.name}: site "x": tensor "w" should have shape \\[2, 2\\], got \\[4\\]`),
      );
      const badName = [namedTensor('w', [2, 2], [1, 1, 1, 1]), namedTensor('bias', [1], [1])];
      expect(() => s.aggregate(global, [site('y', badName)])).toThrow(/site "y": tensor 1 should be "b", got "bias"/);
      expect(() => s.aggregate(global, [site('z', [namedTensor('w', [2, 2], [1, 1, 1, 1])])])).toThrow(
        /site "z": expected 2 tensors, got 1/,
      );
    }
  });

  it('selection, median and trimmed mean agree with sorting on random data with ties', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 2000; trial++) {
      const n = 1 + (trial % 50);
      const data = Array.from({ length: n }, () => Math.round(rand() * 20) - 10 + (rand() < 0.5 ? 0 : rand()));
      const sorted = [...data].sort((x, y) => x - y);
      const k = Math.floor(rand() * n);
      const a = Float64Array.from(data);
      selectInPlace(a, 0, n - 1, k);
      expect(a[k]).toBe(sorted[k]);
      for (let i = 0; i < k; i++) expect(a[i]).toBeLessThanOrEqual(a[k]);
      for (let i = k + 1; i < n; i++) expect(a[i]).toBeGreaterThanOrEqual(a[k]);
      const med = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
      expect(medianInPlace(Float64Array.from(data), n)).toBe(med);
      const drop = Math.floor(rand() * (Math.floor((n - 1) / 2) + 1));
      const kept = sorted.slice(drop, n - drop);
      expect(trimmedMeanInPlace(Float64Array.from(data), n, drop)).toBeCloseTo(kept.reduce((s, x) => s + x, 0) / kept.length, 10);
    }
  });
});
