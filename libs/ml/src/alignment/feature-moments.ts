/**
 * Feature moments: what a site may share about its penultimate features for feature alignment —
 * a row count and the first two raw moments, never a per-image vector. Pure float64 helpers
 * (no tfjs): build, merge, validate, and turn into a covariance.
 */
import { ValidationError } from '@histofed/fl-core';

/** Largest feature dimension accepted (a 4096 x 4096 second moment is 128 MiB of float64). */
export const MAX_FEATURE_DIM = 4096;

/**
 * Moments of `count` feature rows of `dim` values: `mean` = E[x] (dim values) and `secondMoment`
 * = E[x x^T] (dim x dim, row-major, symmetric), both averages over the rows (not sums), in float64.
 */
export interface FeatureMoments {
  readonly count: number;
  readonly dim: number;
  readonly mean: Float64Array;
  readonly secondMoment: Float64Array;
}

function checkDim(dim: number, what: string): void {
  if (!Number.isInteger(dim) || dim < 1 || dim > MAX_FEATURE_DIM) {
    throw new ValidationError(`${what}.dim: must be an integer in [1, ${MAX_FEATURE_DIM}], got ${dim}`);
  }
}

/**
 * Float64 running sums of feature rows (sum x and the upper triangle of sum x x^T); `moments()`
 * turns them into FeatureMoments. Used by `featureMoments` to add one mini-batch at a time.
 */
export class FeatureMomentsAccumulator {
  private readonly sum: Float64Array;
  private readonly outer: Float64Array;
  private rows = 0;

  constructor(readonly dim: number) {
    checkDim(dim, 'features');
    this.sum = new Float64Array(dim);
    this.outer = new Float64Array(dim * dim);
  }

  get count(): number {
    return this.rows;
  }

  /** Adds `count` rows of `dim` values (row-major); throws naming a row that is not finite. */
  add(rows: ArrayLike<number>, count: number): void {
    const d = this.dim;
    if (!Number.isInteger(count) || count < 0 || rows.length !== count * d) {
      throw new ValidationError(`features: ${count} rows of ${d} values need ${count * d} values, got ${rows.length}`);
    }
    const x = new Float64Array(d);
    for (let r = 0; r < count; r++) {
      for (let i = 0; i < d; i++) {
        const v = rows[r * d + i];
        if (v - v !== 0) throw new ValidationError(`features: row ${this.rows + r} holds a non-finite value (${v})`);
        x[i] = v;
      }
      for (let i = 0; i < d; i++) {
        const xi = x[i];
        this.sum[i] += xi;
        if (xi === 0) continue; // ReLU features are often 0
        const o = i * d;
        for (let j = i; j < d; j++) this.outer[o + j] += xi * x[j];
      }
    }
    this.rows += count;
  }

  /** The moments of every row added so far (throws when there is none). */
  moments(): FeatureMoments {
    const d = this.dim;
    const n = this.rows;
    if (n === 0) throw new ValidationError('features: no rows; moments need at least one');
    const mean = Float64Array.from(this.sum, (s) => s / n);
    const secondMoment = new Float64Array(d * d);
    for (let i = 0; i < d; i++) {
      for (let j = i; j < d; j++) {
        const v = this.outer[i * d + j] / n;
        secondMoment[i * d + j] = v;
        secondMoment[j * d + i] = v;
      }
    }
    return { count: n, dim: d, mean, secondMoment };
  }
}

/** Moments of `count` rows of `dim` values (row-major, float32 or float64), in float64. */
export function momentsOfRows(rows: ArrayLike<number>, count: number, dim: number): FeatureMoments {
  const acc = new FeatureMomentsAccumulator(dim);
  acc.add(rows, count);
  return acc.moments();
}

/**
 * The moments of the union of the rows behind `list` (count-weighted averages of the means and
 * second moments: exact, as raw moments are averages). Pure; validates every entry.
 */
export function combineFeatureMoments(list: readonly FeatureMoments[]): FeatureMoments {
  if (list.length === 0) throw new ValidationError('featureMoments: nothing to combine');
  list.forEach((m, i) => validateFeatureMoments(m, `featureMoments[${i}]`));
  const dim = list[0].dim;
  list.forEach((m, i) => {
    if (m.dim !== dim) throw new ValidationError(`featureMoments[${i}].dim: ${m.dim} differs from featureMoments[0].dim ${dim}`);
  });
  const count = list.reduce((n, m) => n + m.count, 0);
  const mean = new Float64Array(dim);
  const secondMoment = new Float64Array(dim * dim);
  for (const m of list) {
    const w = m.count / count;
    for (let i = 0; i < dim; i++) mean[i] += w * m.mean[i];
    for (let i = 0; i < dim * dim; i++) secondMoment[i] += w * m.secondMoment[i];
  }
  return { count, dim, mean, secondMoment };
}

/**
 * The covariance (dim x dim, row-major, exactly symmetric) of the rows behind `m`:
 * `'unbiased'` (the default; sample covariance, divides by count - 1, needs count >= 2) =
 * count / (count - 1) * (E[x x^T] - mu mu^T), or `'population'` (divides by count) = E[x x^T] - mu mu^T.
 */
export function covarianceOf(m: FeatureMoments, kind: 'unbiased' | 'population' = 'unbiased'): Float64Array {
  const { dim: d, count: n, mean } = m;
  if (kind === 'unbiased' && n < 2) throw new ValidationError(`featureMoments.count: an unbiased covariance needs count >= 2, got ${n}`);
  const scale = kind === 'unbiased' ? n / (n - 1) : 1;
  const out = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = i; j < d; j++) {
      const s = (m.secondMoment[i * d + j] + m.secondMoment[j * d + i]) / 2;
      const v = scale * (s - mean[i] * mean[j]);
      out[i * d + j] = v;
      out[j * d + i] = v;
    }
  }
  return out;
}

/** Relative tolerance of the symmetry and variance checks of validateFeatureMoments. */
const SYMMETRY_TOLERANCE = 1e-9;

/**
 * Checks that `x` is FeatureMoments (e.g. received from a site); throws a ValidationError naming
 * the field (`${what}.count`, `${what}.mean[3]`, `${what}.secondMoment[1][2]`, ...): count a
 * safe integer >= 1; dim an integer in [1, MAX_FEATURE_DIM]; mean a Float64Array of dim finite
 * values; secondMoment a Float64Array of dim * dim finite values, symmetric within 1e-9 x its
 * largest magnitude (at least 1), with E[x_i^2] >= mean_i^2 within the same tolerance.
 */
export function validateFeatureMoments(x: unknown, what = 'featureMoments'): asserts x is FeatureMoments {
  if (typeof x !== 'object' || x === null) throw new ValidationError(`${what}: must be an object with count, dim, mean and secondMoment`);
  const m = x as Record<string, unknown>;
  const count = m['count'];
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1) {
    throw new ValidationError(`${what}.count: must be an integer >= 1, got ${String(count)}`);
  }
  const dim = m['dim'];
  if (typeof dim !== 'number') throw new ValidationError(`${what}.dim: must be a number, got ${typeof dim}`);
  checkDim(dim, what);
  const mean = m['mean'];
  if (!(mean instanceof Float64Array)) throw new ValidationError(`${what}.mean: must be a Float64Array`);
  if (mean.length !== dim) throw new ValidationError(`${what}.mean: expected ${dim} values (dim), got ${mean.length}`);
  for (let i = 0; i < dim; i++) {
    if (!Number.isFinite(mean[i])) throw new ValidationError(`${what}.mean[${i}]: must be finite, got ${mean[i]}`);
  }
  const s = m['secondMoment'];
  if (!(s instanceof Float64Array)) throw new ValidationError(`${what}.secondMoment: must be a Float64Array`);
  if (s.length !== dim * dim) throw new ValidationError(`${what}.secondMoment: expected ${dim * dim} values (dim * dim), got ${s.length}`);
  let largest = 1;
  for (let i = 0; i < s.length; i++) {
    if (!Number.isFinite(s[i])) throw new ValidationError(`${what}.secondMoment[${Math.floor(i / dim)}][${i % dim}]: must be finite, got ${s[i]}`);
    largest = Math.max(largest, Math.abs(s[i]));
  }
  const tol = SYMMETRY_TOLERANCE * largest;
  for (let i = 0; i < dim; i++) {
    if (s[i * dim + i] < mean[i] * mean[i] - tol) {
      throw new ValidationError(`${what}.secondMoment[${i}][${i}]: E[x_i^2] = ${s[i * dim + i]} is below mean[${i}]^2 = ${mean[i] * mean[i]} (negative variance)`);
    }
    for (let j = i + 1; j < dim; j++) {
      if (Math.abs(s[i * dim + j] - s[j * dim + i]) > tol) {
        throw new ValidationError(`${what}.secondMoment[${i}][${j}]: not symmetric (${s[i * dim + j]} vs [${j}][${i}] ${s[j * dim + i]})`);
      }
    }
  }
}

/** Feature moments as JSON carries them (plain arrays; the second moment row-major). */
export interface PlainFeatureMoments {
  readonly count: number;
  readonly dim: number;
  readonly mean: number[];
  readonly secondMoment: number[];
}

export function toPlainMoments(m: FeatureMoments): PlainFeatureMoments {
  return { count: m.count, dim: m.dim, mean: Array.from(m.mean), secondMoment: Array.from(m.secondMoment) };
}

/** Plain moments (e.g. received in a message) as FeatureMoments, validated (the error names `what` and the field). */
export function fromPlainMoments(m: PlainFeatureMoments, what = 'featureMoments'): FeatureMoments {
  const moments = { count: m.count, dim: m.dim, mean: Float64Array.from(m.mean), secondMoment: Float64Array.from(m.secondMoment) };
  validateFeatureMoments(moments, what);
  return moments;
}
