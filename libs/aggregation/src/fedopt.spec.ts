import { NamedTensor, WeightSet, namedTensor } from '@histofed/fl-core';
import { FEDADAM_DEFAULTS, FedAdagrad, FedAdam, FedYogi } from './fedopt';
import { SiteResult } from './strategy';

const w = (v: number[]): NamedTensor[] => [namedTensor('w', [3], v)];
const site = (siteId: string, weights: WeightSet, numSamples: number): SiteResult => ({ siteId, numSamples, weights, metrics: {} });
const arr = (ws: WeightSet | undefined) => (ws ?? []).map((t) => Array.from(t.values));

// Hand-computed with eta = 1, beta1 = 0.5, beta2 = 0.75, tau = 0.5.
const opts = { eta: 1, beta1: 0.5, beta2: 0.75, tau: 0.5 };
const g0 = w([0, 1, 0]);
// Round 1: a (1 sample) and b (3 samples); weighted mean [-1, 1, 2], delta = [-1, 0, 2].
const round1 = [site('a', w([2, 1, 2]), 1), site('b', w([-2, 1, 2]), 3)];
// m1 = 0.5 * delta = [-0.5, 0, 1]; v1 = 0.25 * delta^2 = [0.25, 0, 1] (Adam and Yogi alike: v0 = 0)
// g1 = g0 + m1 / (sqrt(v1) + 0.5) = [-0.5 / 1, 1 + 0, 1 / 1.5] = [-0.5, 1, 2/3]
// Round 2: mean [1, 3, g1[2]], delta = [1.5, 2, 0] (the third coordinate does not move).
const round2 = (g1: WeightSet) => [site('a', w([1.5, 3, g1[0].values[2]]), 1), site('b', w([0.5, 3, g1[0].values[2]]), 1)];

describe('FedAdam', () => {
  it('two rounds by hand, state carried as m/ and v/ tensors', () => {
    const adam = new FedAdam(opts);
    const r1 = adam.aggregate(g0, round1);
    expect(arr(r1.weights)[0]).toEqual([-0.5, 1, expect.closeTo(2 / 3, 6)]);
    expect(r1.state!.map((t) => [t.name, t.shape])).toEqual([
      ['m/w', [3]],
      ['v/w', [3]],
    ]);
    expect(arr(r1.state)).toEqual([
      [-0.5, 0, 1],
      [0.25, 0, 1],
    ]);
    const r2 = adam.aggregate(r1.weights, round2(r1.weights), r1.state);
    // m2 = 0.5 m1 + 0.5 delta = [0.5, 1, 0.5]
    // v2 = 0.75 v1 + 0.25 delta^2 = [0.1875 + 0.5625, 0 + 1, 0.75] = [0.75, 1, 0.75]
    expect(arr(r2.state)).toEqual([
      [0.5, 1, 0.5],
      [0.75, 1, 0.75],
    ]);
    // g2 = g1 + m2 / (sqrt(v2) + 0.5) = [-0.5 + 0.5 / 1.3660254, 1 + 1 / 1.5, 2/3 + 0.5 / 1.3660254]
    const [g2] = arr(r2.weights);
    expect(g2[0]).toBeCloseTo(-0.5 + 0.5 / (Math.sqrt(0.75) + 0.5), 6);
    expect(g2[0]).toBeCloseTo(-0.1339746, 6);
    expect(g2[1]).toBeCloseTo(5 / 3, 6);
    expect(g2[2]).toBeCloseTo(1.0326921, 6);
  });

  it('defaults: eta 1e-2, beta1 0.9, beta2 0.99, tau 1e-3; the first step is at most eta per coordinate', () => {
    const adam = new FedAdam();
    expect({ eta: adam.eta, beta1: adam.beta1, beta2: adam.beta2, tau: adam.tau }).toEqual(FEDADAM_DEFAULTS);
    expect(FEDADAM_DEFAULTS).toEqual({ eta: 1e-2, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
    const [g1] = arr(adam.aggregate(g0, round1).weights);
    // step = 0.01 * 0.1 d / (0.1 |d| + 0.001): [-0.01 / 1.01, 0, 0.02 / 0.021]
    expect(g1[0]).toBeCloseTo(-0.01 * (0.1 / 0.101), 7);
    expect(g1[1]).toBe(1);
    expect(g1[2]).toBeCloseTo(0.01 * (0.2 / 0.201), 7);
  });
});

describe('FedYogi', () => {
  it('two rounds by hand: v grows additively and does not decay where delta^2 < v', () => {
    const yogi = new FedYogi(opts);
    const r1 = yogi.aggregate(g0, round1);
    expect(arr(r1.weights)[0]).toEqual([-0.5, 1, expect.closeTo(2 / 3, 6)]);
    expect(arr(r1.state)).toEqual([
      [-0.5, 0, 1],
      [0.25, 0, 1],
    ]);
    const r2 = yogi.aggregate(r1.weights, round2(r1.weights), r1.state);
    // v2 = v1 - 0.25 delta^2 sign(v1 - delta^2) = [0.25 + 0.5625, 0 + 1, 1 - 0] = [0.8125, 1, 1]
    expect(arr(r2.state)).toEqual([
      [0.5, 1, 0.5],
      [0.8125, 1, 1],
    ]);
    const [g2] = arr(r2.weights);
    expect(g2[0]).toBeCloseTo(-0.5 + 0.5 / (Math.sqrt(0.8125) + 0.5), 6);
    expect(g2[0]).toBeCloseTo(-0.1432109, 6);
    expect(g2[1]).toBeCloseTo(5 / 3, 6);
    expect(g2[2]).toBeCloseTo(1, 6); // 2/3 + 0.5 / (1 + 0.5)
  });

  it('decreases v by (1 - beta2) delta^2 where v > delta^2 (Adam would decay it by beta2)', () => {
    const yogi = new FedYogi(opts);
    const state = [namedTensor('m/w', [3], [0, 0, 0]), namedTensor('v/w', [3], [4, 4, 4])];
    const out = yogi.aggregate(w([0, 0, 0]), [site('a', w([1, 1, 1]), 1)], state);
    expect(arr(out.state)[1]).toEqual([3.75, 3.75, 3.75]); // 4 - 0.25 * 1
    expect(arr(new FedAdam(opts).aggregate(w([0, 0, 0]), [site('a', w([1, 1, 1]), 1)], state).state)[1]).toEqual([3.25, 3.25, 3.25]);
  });
});

describe('FedAdagrad', () => {
  it('accumulates delta^2; no momentum by default (beta1 = 0)', () => {
    const ada = new FedAdagrad({ eta: 1, tau: 0.5 });
    expect(ada.beta1).toBe(0);
    const r1 = ada.aggregate(g0, round1);
    // m1 = delta = [-1, 0, 2], v1 = [1, 0, 4]; g1 = [-1 / 1.5, 1, 2 / 2.5]
    expect(arr(r1.state)).toEqual([
      [-1, 0, 2],
      [1, 0, 4],
    ]);
    expect(arr(r1.weights)[0]).toEqual([expect.closeTo(-2 / 3, 6), 1, expect.closeTo(0.8, 6)]);
    const r2 = ada.aggregate(r1.weights, [site('a', r1.weights, 1)], r1.state);
    expect(arr(r2.state)[1]).toEqual([1, 0, 4]); // delta = 0: v unchanged, m = 0
    expect(arr(r2.weights)).toEqual(arr(r1.weights));
  });
});

describe('server optimizers', () => {
  const all = () => [new FedAdam(opts), new FedYogi(opts), new FedAdagrad({ eta: 1, tau: 0.5 })];

  it('do not mutate global weights, site weights or the state passed in', () => {
    for (const s of all()) {
      const r1 = s.aggregate(g0, round1);
      const before = { g: arr(r1.weights), sites: round2(r1.weights).map((r) => arr(r.weights)), state: arr(r1.state) };
      const sites = round2(r1.weights);
      const r2 = s.aggregate(r1.weights, sites, r1.state);
      expect(arr(r1.weights)).toEqual(before.g);
      expect(sites.map((r) => arr(r.weights))).toEqual(before.sites);
      expect(arr(r1.state)).toEqual(before.state);
      expect(r2.state![0].values).not.toBe(r1.state![0].values);
      expect(arr(g0)).toEqual([[0, 1, 0]]);
    }
  });

  it('refuse empty rounds, site layouts that differ from the global model, and foreign state', () => {
    for (const s of all()) {
      expect(() => s.aggregate(g0, [])).toThrow(new RegExp(`${s.name}: no results to aggregate`));
      expect(() => s.aggregate(g0, [round1[0], site('b', [namedTensor('w', [1, 3], [1, 2, 3])], 1)])).toThrow(
        new RegExp(`${s.name}: site "b": tensor "w" should have shape \\[3\\], got \\[1, 3\\]`),
      );
      expect(() => s.aggregate(g0, [site('c', [namedTensor('x', [3], [1, 2, 3])], 1)])).toThrow(
        /site "c": tensor 0 should be "w", got "x"/,
      );
      expect(() => s.aggregate(g0, round1, [namedTensor('m/w', [3], [0, 0, 0])])).toThrow(
        new RegExp(`${s.name}: state: expected 2 tensors`),
      );
      expect(() => s.aggregate(g0, round1, [namedTensor('m/w', [3], [0, 0, 0]), namedTensor('v/x', [3], [0, 0, 0])])).toThrow(
        /state: tensor 1 should be "v\/w", got "v\/x"/,
      );
      expect(() => s.aggregate(g0, round1, [namedTensor('m/w', [1], [0]), namedTensor('v/w', [3], [0, 0, 0])])).toThrow(
        /state: tensor "m\/w" should have shape \[3\], got \[1\]/,
      );
    }
  });

  it('validate their options, naming the option', () => {
    expect(() => new FedAdam({ eta: 0 })).toThrow(/strategy "fedadam": option "eta" must be a positive finite number, got 0/);
    expect(() => new FedYogi({ beta1: 1 })).toThrow(/strategy "fedyogi": option "beta1" must be a number in \[0, 1\), got 1/);
    expect(() => new FedAdam({ beta2: -0.1 })).toThrow(/option "beta2"/);
    expect(() => new FedAdagrad({ tau: Infinity })).toThrow(/strategy "fedadagrad": option "tau"/);
    expect(() => new FedAdam({ eta: undefined })).not.toThrow();
  });
});
