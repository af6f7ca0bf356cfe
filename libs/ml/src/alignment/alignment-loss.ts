/**
 * Feature-alignment losses between a mini-batch's penultimate features X (n x d, a tfjs tensor,
 * differentiable) and a reference known only by its moments (FeatureMoments aggregated over the
 * sites): the constant reference parts are prepared once per round, in float64 on the CPU
 * (`prepareAlignmentReference`), and held as float32 constant tensors.
 *
 * CORAL (Sun & Saenko 2016, "Deep CORAL"): ||C_X - C_ref||_F^2 / (4 d^2), with C_X the unbiased
 * covariance of the batch (divides by n - 1, needs n >= 2) and C_ref the unbiased covariance of
 * the reference (covarianceOf(m, 'unbiased')).
 *
 * MMD: the squared maximum mean discrepancy, for the RBF kernel k_s(x, y) = exp(-||x - y||^2 / (2 s^2))
 * summed over bandwidths s in S (sum_s k_s is characteristic), between the batch's empirical
 * distribution P_n = (1/n) sum_i delta_{x_i} and the Gaussian Q = N(mu, Sigma) with the reference's
 * mean and unbiased covariance:
 *
 *   MMD^2 = sum_s [ E_{x,x' ~ P_n} k_s(x, x') - 2 E_{x ~ P_n, y ~ Q} k_s(x, y) + E_{y,y' ~ Q} k_s(y, y') ]
 *
 * Every term is exact (no sampling, no random features), by Gaussian integrals:
 * - batch term: (1/n^2) sum_{i,j} k_s(x_i, x_j) (the V-statistic, diagonal included: this is the
 *   MMD of the empirical distribution itself, >= 0; for n rows drawn from Q its expectation is
 *   (1/n) (1 - E k_s(y, y')) per bandwidth, not 0);
 * - cross term: E_{y ~ Q} k_s(x, y) = det(I + Sigma/s^2)^(-1/2) exp(-(1/2) (x - mu)^T (Sigma + s^2 I)^(-1) (x - mu))
 *   (k_s is (2 pi s^2)^(d/2) times the density of N(x, s^2 I), and the product of two Gaussian
 *   densities integrates to N(x; mu, Sigma + s^2 I));
 * - reference term: y - y' ~ N(0, 2 Sigma), so E k_s(y, y') = det(I + 2 Sigma/s^2)^(-1/2), a constant.
 * With the eigendecomposition Sigma = V diag(lambda) V^T (float64, once), z = (x - mu) V gives the
 * quadratic form as sum_k z_k^2 / (lambda_k + s^2), the log-determinants as sum_k log(1 + lambda_k/s^2),
 * and ||x_i - x_j|| = ||z_i - z_j|| (centred and rotated rows keep float32 distances accurate).
 * This is therefore the RBF-MMD to the reference's Gaussian approximation: it is exact when the
 * reference features are Gaussian, and otherwise measures the distance to the Gaussian with the
 * same first two moments (which is all a site may learn about the others).
 *
 * Bandwidths: `bandwidthMultiples` (default [0.5, 1, 2]) x a base bandwidth s0 = sqrt(2 tr Sigma),
 * the root mean squared distance between two reference draws (E||y - y'||^2 = 2 tr Sigma), the
 * moment analogue of the median heuristic (s0 = 1 when the reference has no variance); or explicit
 * `bandwidths`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ValidationError } from '@histofed/fl-core';
import { covarianceOf, validateFeatureMoments, type FeatureMoments } from './feature-moments';
import { symmetricEigen } from './linalg64';

export const ALIGNMENT_METHODS = ['coral', 'mmd'] as const;
export type AlignmentMethod = (typeof ALIGNMENT_METHODS)[number];

/** Default multiples of the base bandwidth sqrt(2 tr Sigma) for MMD. */
export const DEFAULT_BANDWIDTH_MULTIPLES: readonly number[] = [0.5, 1, 2];

export interface AlignmentReferenceOptions {
  /** What to prepare (default both): MMD needs an O(d^3) eigendecomposition. */
  readonly methods?: readonly AlignmentMethod[];
  /** MMD bandwidths as multiples of sqrt(2 tr Sigma) (default DEFAULT_BANDWIDTH_MULTIPLES). */
  readonly bandwidthMultiples?: readonly number[];
  /** Absolute MMD bandwidths s (overrides bandwidthMultiples). */
  readonly bandwidths?: readonly number[];
}

/** The constant parts of the losses for one reference (float32 tensors); call `dispose()` when the round ends. */
export interface AlignmentReference {
  readonly dim: number;
  /** Rows behind the reference. */
  readonly count: number;
  readonly methods: readonly AlignmentMethod[];
  /** The reference mean mu [d]. */
  readonly mean: tf.Tensor1D;
  /** CORAL: the unbiased reference covariance [d, d] (null when 'coral' was not prepared). */
  readonly covariance: tf.Tensor2D | null;
  /** MMD: the bandwidths s used (empty when 'mmd' was not prepared). */
  readonly bandwidths: readonly number[];
  /** MMD: eigenvectors V of the covariance [d, d] (columns). */
  readonly rotation: tf.Tensor2D | null;
  /** MMD: 1 / (lambda_k + s_b^2) [d, B]. */
  readonly inverseScales: tf.Tensor2D | null;
  /** MMD: log det(I + Sigma/s_b^2)^(-1/2) [B]. */
  readonly logCrossScales: tf.Tensor1D | null;
  /** MMD: 1 / (2 s_b^2) [B]. */
  readonly inverseTwoVariances: tf.Tensor1D | null;
  /** MMD: sum_b det(I + 2 Sigma/s_b^2)^(-1/2), the reference-reference term (float64). */
  readonly referenceTerm: number;
  dispose(): void;
}

function checkPositiveList(values: readonly number[], what: string): void {
  if (!Array.isArray(values) || values.length === 0 || values.length > 16) {
    throw new ValidationError(`${what}: must be a list of 1 to 16 numbers`);
  }
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ValidationError(`${what}[${i}]: must be a positive number, got ${String(v)}`);
  });
}

/** Checks AlignmentReferenceOptions (names the field). */
export function checkAlignmentReferenceOptions(o: AlignmentReferenceOptions, what = 'alignment'): void {
  if (o.methods !== undefined) {
    if (!Array.isArray(o.methods) || o.methods.length === 0) throw new ValidationError(`${what}.methods: must list coral and/or mmd`);
    o.methods.forEach((m, i) => {
      if (!(ALIGNMENT_METHODS as readonly string[]).includes(m)) throw new ValidationError(`${what}.methods[${i}]: must be coral or mmd, got ${String(m)}`);
    });
  }
  if (o.bandwidthMultiples !== undefined) checkPositiveList(o.bandwidthMultiples, `${what}.bandwidthMultiples`);
  if (o.bandwidths !== undefined) checkPositiveList(o.bandwidths, `${what}.bandwidths`);
}

/**
 * Prepares the constant parts of the alignment losses from reference moments (validated; count
 * >= 2 for the unbiased covariance). Float64 work on the CPU: the covariance, and for MMD its
 * eigendecomposition. The returned tensors are kept (also when called inside tf.tidy) until `dispose()`.
 */
export function prepareAlignmentReference(moments: FeatureMoments, options: AlignmentReferenceOptions = {}): AlignmentReference {
  validateFeatureMoments(moments, 'reference');
  checkAlignmentReferenceOptions(options);
  if (moments.count < 2) throw new ValidationError(`reference.count: a reference needs at least 2 rows, got ${moments.count}`);
  const d = moments.dim;
  const methods = [...new Set(options.methods ?? ALIGNMENT_METHODS)];
  const sigma = covarianceOf(moments, 'unbiased');
  const tensors: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => {
    tensors.push(tf.keep(t));
    return t;
  };
  const mean = keep(tf.tensor1d(Float32Array.from(moments.mean), 'float32'));
  const covariance = methods.includes('coral') ? keep(tf.tensor2d(Float32Array.from(sigma), [d, d], 'float32')) : null;

  let bandwidths: number[] = [];
  let rotation: tf.Tensor2D | null = null;
  let inverseScales: tf.Tensor2D | null = null;
  let logCrossScales: tf.Tensor1D | null = null;
  let inverseTwoVariances: tf.Tensor1D | null = null;
  let referenceTerm = 0;
  if (methods.includes('mmd')) {
    let trace = 0;
    for (let i = 0; i < d; i++) trace += Math.max(0, sigma[i * d + i]);
    const base = trace > 0 ? Math.sqrt(2 * trace) : 1;
    bandwidths = options.bandwidths !== undefined ? [...options.bandwidths] : (options.bandwidthMultiples ?? DEFAULT_BANDWIDTH_MULTIPLES).map((m) => m * base);
    const eig = symmetricEigen(sigma, d);
    const lambda = Float64Array.from(eig.values, (v) => Math.max(0, v)); // rounding can leave tiny negatives
    const B = bandwidths.length;
    const inv = new Float32Array(d * B);
    const logCross = new Float32Array(B);
    for (let b = 0; b < B; b++) {
      const s2 = bandwidths[b] * bandwidths[b];
      let logDet1 = 0;
      let logDet2 = 0;
      for (let k = 0; k < d; k++) {
        inv[k * B + b] = 1 / (lambda[k] + s2);
        logDet1 += Math.log1p(lambda[k] / s2);
        logDet2 += Math.log1p((2 * lambda[k]) / s2);
      }
      logCross[b] = -0.5 * logDet1;
      referenceTerm += Math.exp(-0.5 * logDet2);
    }
    rotation = keep(tf.tensor2d(Float32Array.from(eig.vectors), [d, d], 'float32'));
    inverseScales = keep(tf.tensor2d(inv, [d, B], 'float32'));
    logCrossScales = keep(tf.tensor1d(logCross, 'float32'));
    inverseTwoVariances = keep(tf.tensor1d(Float32Array.from(bandwidths, (s) => 1 / (2 * s * s)), 'float32'));
  }
  return {
    dim: d,
    count: moments.count,
    methods,
    mean,
    covariance,
    bandwidths,
    rotation,
    inverseScales,
    logCrossScales,
    inverseTwoVariances,
    referenceTerm,
    dispose: () => {
      for (const t of tensors) t.dispose();
    },
  };
}

function checkFeatures(features: tf.Tensor, reference: AlignmentReference, minRows: number, what: string): void {
  if (features.rank !== 2 || features.shape[1] !== reference.dim) {
    throw new ValidationError(`${what}: features must be [rows, ${reference.dim}] (the reference's dim), got [${features.shape.join(', ')}]`);
  }
  if (features.shape[0] < minRows) throw new ValidationError(`${what}: needs at least ${minRows} feature rows, got ${features.shape[0]}`);
}

/** CORAL loss ||C_X - C_ref||_F^2 / (4 d^2) of features [n >= 2, d] (see the module comment). */
export function coralLoss(features: tf.Tensor2D, reference: AlignmentReference): tf.Scalar {
  checkFeatures(features, reference, 2, 'coral');
  const cref = reference.covariance;
  if (cref === null) throw new ValidationError("coral: the reference was prepared without 'coral'");
  const [n, d] = features.shape;
  return tf.tidy(() => {
    const centred = tf.sub(features, tf.mean(features, 0, true));
    const cov = tf.div(tf.matMul(centred, centred, true, false), n - 1);
    return tf.div(tf.sum(tf.square(tf.sub(cov, cref))), 4 * d * d) as tf.Scalar;
  });
}

/** Squared RBF-MMD (summed over the bandwidths) between features [n >= 1, d] and the reference's Gaussian (see the module comment). */
export function mmdLoss(features: tf.Tensor2D, reference: AlignmentReference): tf.Scalar {
  checkFeatures(features, reference, 1, 'mmd');
  const { rotation, inverseScales, logCrossScales, inverseTwoVariances } = reference;
  if (rotation === null || inverseScales === null || logCrossScales === null || inverseTwoVariances === null) {
    throw new ValidationError("mmd: the reference was prepared without 'mmd'");
  }
  const n = features.shape[0];
  return tf.tidy(() => {
    const z = tf.matMul(tf.sub(features, reference.mean), rotation); // [n, d]
    const z2 = tf.square(z);
    // cross term: mean_i sum_b det(I + Sigma/s_b^2)^(-1/2) exp(-q_ib / 2)
    const q = tf.matMul(z2, inverseScales); // [n, B]
    const cross = tf.sum(tf.mean(tf.exp(tf.sub(logCrossScales, tf.mul(q, 0.5))), 0));
    // batch term: (1/n^2) sum_ij sum_b exp(-||z_i - z_j||^2 / (2 s_b^2))
    const sq = tf.sum(z2, 1);
    const dist = tf.relu(tf.sub(tf.add(tf.reshape(sq, [n, 1]), tf.reshape(sq, [1, n])), tf.mul(tf.matMul(z, z, false, true), 2)));
    const batch = tf.div(tf.sum(tf.exp(tf.neg(tf.mul(tf.expandDims(dist, 2), inverseTwoVariances)))), n * n);
    return tf.add(tf.sub(batch, tf.mul(cross, 2)), reference.referenceTerm) as tf.Scalar;
  });
}

/**
 * The alignment loss of a batch's penultimate features [n, d] against `reference`: CORAL or MMD
 * (see the module comment). Differentiable w.r.t. `features`; creates tensors only inside tf.tidy
 * (the result is the caller's).
 */
export function alignmentLoss(features: tf.Tensor2D, reference: AlignmentReference, method: AlignmentMethod): tf.Scalar {
  if (method === 'coral') return coralLoss(features, reference);
  if (method === 'mmd') return mmdLoss(features, reference);
  throw new ValidationError(`method: must be coral or mmd, got ${String(method)}`);
}
