import { NamedTensor, WeightSet, namedTensor } from '@histofed/fl-core';
import { FedAvg } from './fedavg';
import { CoordinateMedian, TrimmedMean, medianInPlace, selectInPlace, selectRanks, trimmedMeanInPlace } from './robust';
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

describe('block-wise fast path', () => {
  // The definition, as the strategies computed it before the fast path: per coordinate, the site
  // values in site order go through medianInPlace / trimmedMeanInPlace.
  const perCoordinate = (results: readonly SiteResult[], combine: (v: Float64Array, n: number) => number): Float32Array[] =>
    results[0].weights.map((_, t) => {
      const n = results.length;
      const buf = new Float64Array(n);
      const out = new Float32Array(results[0].weights[t].values.length);
      for (let j = 0; j < out.length; j++) {
        for (let i = 0; i < n; i++) buf[i] = results[i].weights[t].values[j];
        out[j] = combine(buf, n);
      }
      return out;
    });
  const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

  let seed = 2024;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  /**
   * Values that stress the shortcuts: ties, signed zeros, magnitudes 2^-140 .. 2^60, infinities,
   * NaN, and +-1 mixed with tiny values (float64 sums whose result depends on the order).
   */
  const value = (kind: number): number => {
    const u = rand();
    if (kind === 0) return Math.round(u * 6) - 3; // many ties
    if (kind === 1) return u < 0.3 ? 0 : u < 0.6 ? -0 : u < 0.8 ? 1e-45 : -(u - 0.8) * 1e-3; // zeros, denormal
    if (kind === 2) return (u - 0.5) * 2 ** Math.round(rand() * 200 - 140); // wide magnitudes
    if (kind === 3) return u < 0.05 ? Infinity : u < 0.1 ? -Infinity : u - 0.5;
    if (kind === 4) return u < 0.02 ? NaN : u - 0.5;
    if (kind === 6) return u < 0.4 ? 1 : u < 0.8 ? -1 : 2 ** -60 * Math.round(1 + rand() * 8);
    return 0.05 + (u - 0.5) * 0.002; // typical: a weight plus small site noise
  };
  const randomRound = (n: number, length: number): { global: WeightSet; results: SiteResult[] } => {
    const shapes = [[length], [3]];
    const global = shapes.map((s, t) => namedTensor(`t${t}`, s, new Float32Array(s[0])));
    const results = Array.from({ length: n }, (_, i) =>
      site(
        `s${i}`,
        shapes.map((s, t) => namedTensor(`t${t}`, s, Float32Array.from({ length: s[0] }, (_, j) => value((j >> 4) % 7)))),
      ),
    );
    return { global, results };
  };

  it('median and trimmed mean are bit-identical to the per-coordinate definition on adversarial random data', () => {
    for (const n of [1, 2, 3, 4, 5, 7, 10, 16, 31, 50, 51, 64]) {
      const { global, results } = randomRound(n, 700);
      const median = new CoordinateMedian().aggregate(global, results).weights;
      expect(median.map((t) => bits(t.values))).toEqual(perCoordinate(results, medianInPlace).map(bits));
      for (const trim of [0, 0.1, 0.2, 0.3, 0.45]) {
        const s = new TrimmedMean({ trim });
        const trimmed = s.aggregate(global, results).weights;
        const expected = perCoordinate(results, (v, k) => trimmedMeanInPlace(v, k, s.dropCount(k)));
        expect(trimmed.map((t) => bits(t.values))).toEqual(expected.map(bits));
      }
    }
  });

  it('every site order of sets whose float64 sum or zero sign depends on the order gives the definition bit for bit', () => {
    const permutations = (xs: number[]): number[][] =>
      xs.length <= 1 ? [xs] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
    const sets = [
      [-5, -1, 2 ** -60, 1, 5], // kept -1, tiny, 1: the tiny survives only in some orders
      [-3, -(2 ** 40), 1, 2 ** 40, 3, 2 ** -30],
      [-0, 0, 0, 1, -1],
      [-0, 0, -0, 2, -2, 0],
    ];
    for (const set of sets) {
      const orders = permutations(set);
      const global = [namedTensor('w', [orders.length], new Float32Array(orders.length))];
      const results = set.map((_, i) => site(`s${i}`, [namedTensor('w', [orders.length], orders.map((o) => o[i]))]));
      for (const s of [new CoordinateMedian(), new TrimmedMean(), new TrimmedMean({ trim: 0.34 })]) {
        const combine = s instanceof TrimmedMean ? (v: Float64Array, k: number) => trimmedMeanInPlace(v, k, s.dropCount(k)) : medianInPlace;
        expect(bits(s.aggregate(global, results).weights[0].values)).toEqual(bits(perCoordinate(results, combine)[0]));
      }
    }
  });

  it('sums kept values in the definition\'s order where float64 rounding depends on it (sets found by search)', () => {
    // Large values that cancel plus small ones: adding the kept values as (between) + L copies +
    // H copies rounds differently from the definition's order; the exactness test must catch it.
    const cases: [number[], number][] = [
      [[-1686516480, -556806976, -0.3524080216884613, -556806976, 556806976, 556806976, -0.3524080216884613, 0.4197688102722168, 1686516480], 0.2],
      [[1165626112, -0.08224613964557648, -586838272, -0.08224613964557648, 586838272, -586838272], 0.2],
      [[0.43616193532943726, -1841347328, -0.1428760588169098, 842729472, -0.1428760588169098, -842729472, 0.43616193532943726, -0.1428760588169098, -0.1428760588169098, 1841347328], 0.1],
    ];
    for (const [set, trim] of cases) {
      const s = new TrimmedMean({ trim });
      const global = [namedTensor('w', [1], [0])];
      const results = set.map((x, i) => site(`s${i}`, [namedTensor('w', [1], [x])]));
      expect(s.dropCount(set.length)).toBe(1);
      expect(bits(s.aggregate(global, results).weights[0].values)).toEqual(bits(perCoordinate(results, (v, k) => trimmedMeanInPlace(v, k, 1))[0]));
    }
  });

  it('agrees with a sort-based reference (values; zeros of either sign compare equal)', () => {
    const { global, results } = randomRound(50, 3000);
    const finite = results.map((r) => site(r.siteId, r.weights.map((t) => namedTensor(t.name, t.shape, t.values.map((x) => (Number.isFinite(x) ? x : 0.5))))));
    const sortedColumn = (t: number, j: number) => finite.map((r) => r.weights[t].values[j]).sort((a, b) => a - b);
    const median = new CoordinateMedian().aggregate(global, finite).weights;
    const trimmed = new TrimmedMean().aggregate(global, finite).weights;
    for (let t = 0; t < median.length; t++) {
      for (let j = 0; j < median[t].values.length; j++) {
        const v = sortedColumn(t, j);
        expect(median[t].values[j] === Math.fround((v[24] + v[25]) / 2)).toBe(true);
        const kept = v.slice(10, 40);
        const mean = kept.reduce((a, b) => a + b, 0) / kept.length;
        // Summation order may differ from the sorted one only where float64 rounding cannot matter.
        expect(Math.abs(trimmed[t].values[j] - Math.fround(mean))).toBeLessThanOrEqual(Math.abs(Math.fround(mean)) * 2 ** -23 + 1e-44);
      }
    }
  });

  it('selectRanks returns the order statistics without touching its input, NaN when a value is NaN', () => {
    const t1 = new Float64Array(64);
    const t2 = new Float64Array(64);
    const out = new Float64Array(2);
    for (let trial = 0; trial < 3000; trial++) {
      const n = 1 + (trial % 60);
      const off = trial % 7;
      const src = Float64Array.from({ length: n + off + 3 }, () => value(trial % 4 === 3 ? 0 : [0, 1, 2, 3, 5, 6][trial % 6]));
      const before = Array.from(src);
      const sorted = Array.from(src.subarray(off, off + n)).sort((a, b) => a - b);
      const k1 = Math.floor(rand() * n);
      const k2 = k1 + Math.floor(rand() * (n - k1));
      selectRanks(src, off, n, k1, k2, t1, t2, out);
      expect(Array.from(src)).toEqual(before);
      expect([out[0] === sorted[k1], out[1] === sorted[k2]]).toEqual([true, true]);
    }
    selectRanks(Float64Array.from([3, NaN, 1, 2]), 0, 4, 1, 2, t1, t2, out);
    expect([out[0], out[1]]).toEqual([NaN, NaN]);
  });
});
