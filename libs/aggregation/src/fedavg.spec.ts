import { NamedTensor, namedTensor } from '@histofed/fl-core';
import { createStrategy } from './create-strategy';
import { FedAvg } from './fedavg';
import { weightedAverage, weightedMetrics } from './weights-math';

const set = (a: number[], b: number[]) => [namedTensor('dense/kernel', [2, 2], a), namedTensor('dense/bias', [2], b)];

describe('FedAvg', () => {
  const fedavg = new FedAvg();
  const global = set([0, 0, 0, 0], [0, 0]);

  it('weights each site by its sample count (exact numbers)', () => {
    const { weights: out, state } = fedavg.aggregate(global, [
      { siteId: 'a', numSamples: 10, weights: set([1, 2, 3, 4], [10, 0]), metrics: {} },
      { siteId: 'b', numSamples: 30, weights: set([5, 6, 7, 8], [-2, 4]), metrics: {} },
    ]);
    // (10*x_a + 30*x_b) / 40
    expect(Array.from(out[0].values)).toEqual([4, 5, 6, 7]);
    expect(Array.from(out[1].values)).toEqual([1, 3]);
    expect(out.map((t) => t.name)).toEqual(['dense/kernel', 'dense/bias']);
    expect(state).toBeUndefined();
  });

  it('with equal counts is the plain mean, and one site gives its own model back', () => {
    const a = set([1, 1, 1, 1], [1, 1]);
    const b = set([3, 5, 7, 9], [0, 2]);
    expect(Array.from(weightedAverage([a, b], [7, 7])[0].values)).toEqual([2, 3, 4, 5]);
    const alone = fedavg.aggregate(global, [{ siteId: 'a', numSamples: 3, weights: b, metrics: {} }]).weights;
    expect(Array.from(alone[0].values)).toEqual([3, 5, 7, 9]);
  });

  it('refuses mismatched layouts, zero counts and empty rounds', () => {
    const a = set([1, 1, 1, 1], [1, 1]);
    const wrong = [namedTensor('dense/kernel', [4], [1, 1, 1, 1]), namedTensor('dense/bias', [2], [1, 1])];
    expect(() => weightedAverage([a, wrong], [1, 1])).toThrow(/weight set 1: tensor "dense\/kernel" should have shape \[2, 2\]/);
    expect(() => weightedAverage([a], [0])).toThrow(/positive/);
    expect(() => fedavg.aggregate(global, [])).toThrow(/no results/);
    expect(() => fedavg.aggregate(global, [{ siteId: 'b', numSamples: 1, weights: wrong, metrics: {} }])).toThrow(
      /fedavg: site "b": tensor "dense\/kernel" should have shape \[2, 2\]/,
    );
  });

  it('averages metrics by sample count', () => {
    const m = weightedMetrics([
      { numSamples: 1, metrics: { accuracy: 1, loss: 0.2 } },
      { numSamples: 3, metrics: { accuracy: 0.5, loss: 0.6, extra: 1 } },
    ]);
    expect(Object.keys(m).sort()).toEqual(['accuracy', 'loss']);
    expect(m.accuracy).toBeCloseTo(0.625, 12);
    expect(m.loss).toBeCloseTo(0.5, 12);
  });

  it('plans rounds: all sites when they fit, a reproducible subset otherwise, a reason to wait', () => {
    const available = ['c', 'a', 'b', 'd'].map((siteId) => ({ siteId, trainSamples: 10 }));
    expect(fedavg.configureRound({ round: 1, available, minSites: 2, maxSites: 10, seed: 1 })).toEqual({
      kind: 'train',
      participants: ['a', 'b', 'c', 'd'],
    });
    const p1 = fedavg.configureRound({ round: 3, available, minSites: 2, maxSites: 2, seed: 9 });
    const p2 = fedavg.configureRound({ round: 3, available, minSites: 2, maxSites: 2, seed: 9 });
    expect(p1).toEqual(p2);
    expect(p1.kind === 'train' && p1.participants.length).toBe(2);
    const wait = fedavg.configureRound({ round: 2, available: available.slice(0, 1), minSites: 2, maxSites: 5, seed: 1 });
    expect(wait).toEqual({ kind: 'wait', reason: 'round 2 needs at least 2 sites with data, 1 available' });
  });

  it('is created by name', () => {
    expect(createStrategy('fedavg').name).toBe('fedavg');
    expect(() => createStrategy('fedsgd')).toThrow(/unknown strategy "fedsgd"/);
  });
});

describe('weightedAverage', () => {
  // The definition: acc = 0, then acc += (w_i / sum w) * x_i over the sets in order, in float64, rounded to float32 once.
  const reference = (sets: NamedTensor[][], weights: number[]): Float32Array[] => {
    const total = weights.reduce((a, b) => a + b, 0);
    return sets[0].map((_, t) => {
      const acc = new Float64Array(sets[0][t].values.length);
      sets.forEach((s, i) => {
        const f = weights[i] / total;
        for (let j = 0; j < acc.length; j++) acc[j] += f * s[t].values[j];
      });
      return Float32Array.from(acc);
    });
  };

  it('is bit-identical to the sequential definition for any number of sets and tensor lengths across blocks', () => {
    let seed = 7;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (const n of [1, 3, 4, 5, 8, 9, 13, 17, 50]) {
      const lengths = [1, 4095, 4096, 4097, 9000];
      // Per coordinate: +K and -K alternating over the sites, which cancel exactly, and one small
      // value (two when n is even) at random sites; with equal weights the float64 partial sums
      // swing between about K and 0 while the result is about the small value, so adding in any
      // other order changes the float32 result. Then the same sets with random weights.
      const columns = lengths.map((len) =>
        Array.from({ length: len }, () => {
          const k = 2 ** 30 * (1 + rand());
          const small = new Set([Math.floor(rand() * n), n % 2 ? -1 : Math.floor(rand() * n)]);
          const column: number[] = [];
          let sign = 1;
          for (let i = 0; i < n; i++) {
            if (small.has(i) || (n % 2 === 0 && small.size === 1 && i === n - 1)) column.push(rand() - 0.5);
            else {
              column.push(sign * k);
              sign = -sign;
            }
          }
          return column;
        }),
      );
      const sets = Array.from({ length: n }, (_, i) =>
        lengths.map((len, t) => namedTensor(`t${t}`, [len], Float32Array.from({ length: len }, (_, j) => columns[t][j][i]))),
      );
      for (const weights of [sets.map(() => 1), sets.map(() => 1 + Math.floor(rand() * 1000))]) {
        const out = weightedAverage(sets, weights);
        const expected = reference(sets, weights);
        out.forEach((t, i) => expect(Buffer.from(t.values.buffer).equals(Buffer.from(expected[i].buffer))).toBe(true));
      }
    }
  });
});
