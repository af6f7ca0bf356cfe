import * as tf from '@tensorflow/tfjs-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { mulberry32 } from '../random';
import { alignmentLoss, coralLoss, mmdLoss, prepareAlignmentReference, type AlignmentReference } from './alignment-loss';
import { combineFeatureMoments, covarianceOf, momentsOfRows, validateFeatureMoments, type FeatureMoments } from './feature-moments';
import { symmetricEigen } from './linalg64';

beforeAll(async () => {
  await selectBackend('cpu');
});

/** Reference moments with mean `mu` and unbiased covariance `sigma` over `count` rows. */
function referenceOf(mu: number[], sigma: number[][], count = 1000): FeatureMoments {
  const d = mu.length;
  const second = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) second[i * d + j] = (sigma[i][j] * (count - 1)) / count + mu[i] * mu[j];
  return { count, dim: d, mean: Float64Array.from(mu), secondMoment: second };
}

// Hand-computed, float64, written out for 2-D features (no eigendecomposition, no shared code).
const MU = [0.5, -1];
const SIGMA = [
  [2, 0.6],
  [0.6, 1],
];
const X = [
  [1, 0],
  [0, 2],
  [3, 1],
];

function coral64(x: number[][], sigma: number[][]): number {
  const n = x.length;
  const m = [0, 1].map((k) => x.reduce((s, r) => s + r[k], 0) / n);
  let f = 0;
  for (let i = 0; i < 2; i++) {
    for (let j = 0; j < 2; j++) {
      const c = x.reduce((s, r) => s + (r[i] - m[i]) * (r[j] - m[j]), 0) / (n - 1);
      f += (c - sigma[i][j]) ** 2;
    }
  }
  return f / (4 * 2 * 2);
}

function mmd64(x: number[][], mu: number[], sigma: number[][], bandwidths: number[]): number {
  const n = x.length;
  let total = 0;
  for (const s of bandwidths) {
    const s2 = s * s;
    // batch term
    let batch = 0;
    for (const a of x) for (const b of x) batch += Math.exp(-((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / (2 * s2));
    batch /= n * n;
    // cross term: det(I + S/s^2)^(-1/2) exp(-1/2 (x-mu)^T (S + s^2 I)^(-1) (x-mu))
    const a11 = sigma[0][0] + s2;
    const a12 = sigma[0][1];
    const a22 = sigma[1][1] + s2;
    const det = a11 * a22 - a12 * a12;
    const detI = det / (s2 * s2);
    let cross = 0;
    for (const r of x) {
      const u = r[0] - mu[0];
      const v = r[1] - mu[1];
      const q = (a22 * u * u - 2 * a12 * u * v + a11 * v * v) / det;
      cross += Math.exp(-q / 2) / Math.sqrt(detI);
    }
    cross /= n;
    // reference term: det(I + 2 S/s^2)^(-1/2)
    const b11 = 1 + (2 * sigma[0][0]) / s2;
    const b12 = (2 * sigma[0][1]) / s2;
    const b22 = 1 + (2 * sigma[1][1]) / s2;
    const ref = 1 / Math.sqrt(b11 * b22 - b12 * b12);
    total += batch - 2 * cross + ref;
  }
  return total;
}

/** Central differences of f at x (float64). */
function numericGrad(f: (x: number[][]) => number, x: number[][], h = 1e-5): number[][] {
  return x.map((row, i) =>
    row.map((_, j) => {
      const plus = x.map((r) => [...r]);
      const minus = x.map((r) => [...r]);
      plus[i][j] += h;
      minus[i][j] -= h;
      return (f(plus) - f(minus)) / (2 * h);
    }),
  );
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const scale = Math.max(1, Math.abs(expected[i]));
    if (Math.abs(actual[i] - expected[i]) > tol * scale) {
      throw new Error(`index ${i}: ${actual[i]} differs from ${expected[i]} by more than ${tol * scale}`);
    }
  }
}

describe('CORAL', () => {
  it('equals the hand-computed value on 3 rows of 2-D features', () => {
    const ref = prepareAlignmentReference(referenceOf(MU, SIGMA));
    const x = tf.tensor2d(X);
    const loss = coralLoss(x, ref);
    // Batch covariance of X: mean (4/3, 1); [[7/3, -1/2], [-1/2, 1]]; minus Sigma: [[1/3, -1.1], [-1.1, 0]].
    const expected = ((1 / 3) ** 2 + 2 * 1.1 ** 2) / 16;
    expect(coral64(X, SIGMA)).toBeCloseTo(expected, 14);
    expect(loss.dataSync()[0]).toBeCloseTo(expected, 6);
    expect(alignmentLoss(x, ref, 'coral').dataSync()[0]).toBeCloseTo(expected, 6);
    tf.dispose([x, loss]);
    ref.dispose();
  });

  it('has the gradient of central finite differences', () => {
    const ref = prepareAlignmentReference(referenceOf(MU, SIGMA), { methods: ['coral'] });
    const g = tf.grad((x: tf.Tensor) => coralLoss(x as tf.Tensor2D, ref))(tf.tensor2d(X));
    expectClose(g.dataSync(), numericGrad((x) => coral64(x, SIGMA), X).flat(), 1e-4);
    g.dispose();
    ref.dispose();
  });

  it('needs two rows and the reference dim', () => {
    const ref = prepareAlignmentReference(referenceOf(MU, SIGMA));
    expect(() => coralLoss(tf.tensor2d([[1, 2]]), ref)).toThrow('at least 2 feature rows');
    expect(() => coralLoss(tf.tensor2d([[1, 2, 3]]), ref)).toThrow('[rows, 2]');
    const mmdOnly = prepareAlignmentReference(referenceOf(MU, SIGMA), { methods: ['mmd'] });
    expect(() => coralLoss(tf.tensor2d(X), mmdOnly)).toThrow("without 'coral'");
    ref.dispose();
    mmdOnly.dispose();
  });
});

describe('MMD (RBF, Gaussian reference)', () => {
  const BANDWIDTHS = [0.7, 1.5, 3];

  it('equals the hand-computed value on 3 rows of 2-D features, per bandwidth summed', () => {
    const ref = prepareAlignmentReference(referenceOf(MU, SIGMA), { bandwidths: BANDWIDTHS });
    const x = tf.tensor2d(X);
    const expected = mmd64(X, MU, SIGMA, BANDWIDTHS);
    expect(expected).toBeGreaterThan(0.01);
    expect(mmdLoss(x, ref).dataSync()[0]).toBeCloseTo(expected, 5);
    // one bandwidth at a time, and their sum
    const single = BANDWIDTHS.map((s) => {
      const r = prepareAlignmentReference(referenceOf(MU, SIGMA), { bandwidths: [s] });
      const v = alignmentLoss(x, r, 'mmd').dataSync()[0];
      r.dispose();
      expect(v).toBeCloseTo(mmd64(X, MU, SIGMA, [s]), 5);
      return v;
    });
    expect(single.reduce((a, b) => a + b, 0)).toBeCloseTo(expected, 5);
    x.dispose();
    ref.dispose();
  });

  it('defaults to [0.5, 1, 2] x sqrt(2 tr Sigma)', () => {
    const ref = prepareAlignmentReference(referenceOf(MU, SIGMA));
    const base = Math.sqrt(2 * 3);
    expectClose(ref.bandwidths, [0.5 * base, base, 2 * base], 1e-12);
    const x = tf.tensor2d(X);
    expect(mmdLoss(x, ref).dataSync()[0]).toBeCloseTo(mmd64(X, MU, SIGMA, [0.5 * base, base, 2 * base]), 5);
    x.dispose();
    ref.dispose();
  });

  it('has the gradient of central finite differences', () => {
    const ref = prepareAlignmentReference(referenceOf(MU, SIGMA), { bandwidths: BANDWIDTHS });
    const g = tf.grad((x: tf.Tensor) => mmdLoss(x as tf.Tensor2D, ref))(tf.tensor2d(X));
    const expected = numericGrad((x) => mmd64(x, MU, SIGMA, BANDWIDTHS), X).flat();
    expect(Math.max(...expected.map(Math.abs))).toBeGreaterThan(0.01);
    expectClose(g.dataSync(), expected, 1e-4);
    g.dispose();
    ref.dispose();
  });

  it('is ~0 for a large sample of the reference Gaussian and clearly larger when shifted (3-D, correlated)', () => {
    const mu = [1, -2, 0.5];
    const L = [
      [1.2, 0, 0],
      [0.5, 0.8, 0],
      [-0.3, 0.4, 0.6],
    ]; // Sigma = L L^T
    const sigma = mu.map((_, i) => mu.map((__, j) => L[i].reduce((s, v, k) => s + v * L[j][k], 0)));
    const rand = mulberry32(5);
    const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
    const n = 800;
    const rows = new Float32Array(n * 3);
    for (let r = 0; r < n; r++) {
      const e = [normal(), normal(), normal()];
      for (let i = 0; i < 3; i++) rows[r * 3 + i] = mu[i] + L[i].reduce((s, v, k) => s + v * e[k], 0);
    }
    const ref = prepareAlignmentReference(referenceOf(mu, sigma, 50_000));
    const mmdOf = (shift: number) =>
      tf.tidy(() => {
        const x = tf.add(tf.tensor2d(rows, [n, 3]), tf.tensor1d([shift, 0, 0]));
        return mmdLoss(x as tf.Tensor2D, ref).dataSync()[0];
      });
    const same = mmdOf(0);
    const shifted = mmdOf(1.2); // one standard deviation of the first feature
    const coralSame = tf.tidy(() => coralLoss(tf.tensor2d(rows, [n, 3]), ref).dataSync()[0]);
    // The V-statistic's bias for n draws of Q is (1/n) sum_s (1 - E k_s(y, y')) < 3/n.
    expect(same).toBeGreaterThanOrEqual(-1e-5);
    expect(same).toBeLessThan(3 / n + 2e-3);
    expect(shifted).toBeGreaterThan(0.05);
    expect(shifted).toBeGreaterThan(20 * same);
    expect(coralSame).toBeLessThan(1e-3);
    ref.dispose();
  });

  it('keeps no tensors: the reference until dispose(), the losses none', () => {
    const before = tf.memory().numTensors;
    const ref = prepareAlignmentReference(referenceOf(MU, SIGMA));
    const x = tf.tensor2d(X);
    for (const method of ['coral', 'mmd'] as const) tf.dispose(alignmentLoss(x, ref, method));
    tf.dispose(tf.grad((f: tf.Tensor) => alignmentLoss(f as tf.Tensor2D, ref, 'mmd'))(x));
    x.dispose();
    ref.dispose();
    expect(tf.memory().numTensors).toBe(before);
    // prepared inside tf.tidy, the reference survives it
    let kept: AlignmentReference | undefined;
    tf.tidy(() => {
      kept = prepareAlignmentReference(referenceOf(MU, SIGMA));
    });
    expect((kept as AlignmentReference).mean.isDisposed).toBe(false);
    expect((kept as AlignmentReference).rotation?.isDisposed).toBe(false);
    (kept as AlignmentReference).dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('refuses bad options and references, naming the field', () => {
    expect(() => prepareAlignmentReference(referenceOf(MU, SIGMA), { bandwidths: [1, -2] })).toThrow('alignment.bandwidths[1]');
    expect(() => prepareAlignmentReference(referenceOf(MU, SIGMA), { methods: ['kl' as 'mmd'] })).toThrow('alignment.methods[0]');
    expect(() => prepareAlignmentReference({ ...referenceOf(MU, SIGMA), count: 1 })).toThrow('reference.count');
    expect(() => alignmentLoss(tf.tensor2d(X), prepareAlignmentReference(referenceOf(MU, SIGMA)), 'kl' as 'mmd')).toThrow('method');
  });
});

describe('feature moments (pure)', () => {
  const rand = mulberry32(9);
  const d = 4;
  const rowsOf = (n: number) => Float64Array.from({ length: n * d }, () => rand() * 4 - 1);

  function direct(rows: Float64Array, n: number) {
    const mean = new Float64Array(d);
    const second = new Float64Array(d * d);
    for (let r = 0; r < n; r++) {
      for (let i = 0; i < d; i++) {
        mean[i] += rows[r * d + i] / n;
        for (let j = 0; j < d; j++) second[i * d + j] += (rows[r * d + i] * rows[r * d + j]) / n;
      }
    }
    return { mean, second };
  }

  it('momentsOfRows and covarianceOf equal a direct float64 computation', () => {
    const rows = rowsOf(37);
    const m = momentsOfRows(rows, 37, d);
    const e = direct(rows, 37);
    expect(m.count).toBe(37);
    expectClose(m.mean, e.mean, 1e-13);
    expectClose(m.secondMoment, e.second, 1e-13);
    const unbiased = covarianceOf(m);
    const population = covarianceOf(m, 'population');
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) {
        let c = 0;
        for (let r = 0; r < 37; r++) c += (rows[r * d + i] - e.mean[i]) * (rows[r * d + j] - e.mean[j]);
        expect(unbiased[i * d + j]).toBeCloseTo(c / 36, 12);
        expect(population[i * d + j]).toBeCloseTo(c / 37, 12);
      }
    }
    expect(() => covarianceOf(momentsOfRows(rows.subarray(0, d), 1, d))).toThrow('count >= 2');
  });

  it('combineFeatureMoments equals the moments of the concatenated rows', () => {
    const parts = [5, 1, 23].map((n) => ({ n, rows: rowsOf(n) }));
    const all = new Float64Array(29 * d);
    let at = 0;
    for (const p of parts) {
      all.set(p.rows, at);
      at += p.rows.length;
    }
    const combined = combineFeatureMoments(parts.map((p) => momentsOfRows(p.rows, p.n, d)));
    const whole = momentsOfRows(all, 29, d);
    expect(combined.count).toBe(29);
    expectClose(combined.mean, whole.mean, 1e-13);
    expectClose(combined.secondMoment, whole.secondMoment, 1e-13);
    expect(() => combineFeatureMoments([])).toThrow(ValidationError);
    expect(() => combineFeatureMoments([whole, momentsOfRows(rowsOf(2), 4, 2)])).toThrow('featureMoments[1].dim');
  });

  it('validateFeatureMoments names the field', () => {
    const good = momentsOfRows(rowsOf(6), 6, d);
    expect(() => validateFeatureMoments(good)).not.toThrow();
    const bad = (patch: Record<string, unknown>) => () => validateFeatureMoments({ ...good, ...patch }, 'site3');
    expect(bad({ count: 0 })).toThrow('site3.count');
    expect(bad({ count: 2.5 })).toThrow('site3.count');
    expect(bad({ dim: 5000 })).toThrow('site3.dim');
    expect(bad({ mean: [1, 2, 3, 4] })).toThrow('site3.mean: must be a Float64Array');
    expect(bad({ mean: new Float64Array(3) })).toThrow('site3.mean: expected 4');
    const nanMean = Float64Array.from(good.mean);
    nanMean[2] = NaN;
    expect(bad({ mean: nanMean })).toThrow('site3.mean[2]');
    expect(bad({ secondMoment: new Float64Array(15) })).toThrow('site3.secondMoment: expected 16');
    const inf = Float64Array.from(good.secondMoment);
    inf[6] = Infinity;
    expect(bad({ secondMoment: inf })).toThrow('site3.secondMoment[1][2]');
    const asym = Float64Array.from(good.secondMoment);
    asym[1 * d + 3] += 1e-3;
    expect(bad({ secondMoment: asym })).toThrow('site3.secondMoment[1][3]: not symmetric');
    const negVar = Float64Array.from(good.secondMoment);
    negVar[2 * d + 2] = good.mean[2] ** 2 - 0.5;
    expect(bad({ secondMoment: negVar })).toThrow('site3.secondMoment[2][2]');
    expect(() => validateFeatureMoments(null)).toThrow(ValidationError);
  });
});

describe('symmetricEigen (float64)', () => {
  it('decomposes symmetric matrices, also singular ones, with orthonormal vectors', () => {
    const rand = mulberry32(3);
    for (const n of [1, 2, 7, 40]) {
      const rank = Math.max(1, n - 3);
      const b = Float64Array.from({ length: n * rank }, () => rand() - 0.5);
      const a = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < rank; k++) a[i * n + j] += b[i * rank + k] * b[j * rank + k];
      const { values, vectors } = symmetricEigen(a, n);
      for (let k = 1; k < n; k++) expect(values[k]).toBeGreaterThanOrEqual(values[k - 1]);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          let rec = 0;
          let orth = 0;
          for (let k = 0; k < n; k++) {
            rec += vectors[i * n + k] * values[k] * vectors[j * n + k];
            orth += vectors[k * n + i] * vectors[k * n + j];
          }
          expect(Math.abs(rec - a[i * n + j])).toBeLessThan(1e-12);
          expect(Math.abs(orth - (i === j ? 1 : 0))).toBeLessThan(1e-12);
        }
      }
    }
  });
});
