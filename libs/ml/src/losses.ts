/** Loss terms used by local training (tfjs tensors; call inside tf.tidy or a gradient function). */
import * as tf from '@tensorflow/tfjs-core';

/** Probabilities are clipped to [EPSILON, 1 - EPSILON] before the log, as Keras does. */
export const EPSILON = 1e-7;

/**
 * Mean categorical cross-entropy of softmax outputs `probs` [n, k] against class indices `labels`
 * [n] (int32). With `sampleWeights` [n] the mean is of weight x cross-entropy (Keras convention).
 */
export function crossEntropy(probs: tf.Tensor2D, labels: tf.Tensor1D, sampleWeights?: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const k = probs.shape[1];
    const oneHot = tf.cast(tf.oneHot(labels, k), 'float32');
    const logp = tf.log(tf.clipByValue(probs, EPSILON, 1 - EPSILON));
    const perSample = tf.neg(tf.sum(tf.mul(oneHot, logp), -1));
    return tf.mean(sampleWeights === undefined ? perSample : tf.mul(perSample, sampleWeights)) as tf.Scalar;
  });
}

/** FedProx term (mu / 2) * sum_i ||w_i - g_i||^2 over paired weights and global weights. */
export function proximalTerm(weights: readonly tf.Tensor[], globals: readonly tf.Tensor[], mu: number): tf.Scalar {
  if (weights.length !== globals.length) {
    throw new Error(`proximalTerm: ${weights.length} weights but ${globals.length} global weights`);
  }
  return tf.tidy(() => {
    const terms = weights.map((w, i) => tf.sum(tf.squaredDifference(w, globals[i])));
    const total = terms.length === 1 ? terms[0] : tf.addN(terms);
    return tf.mul(total, mu / 2) as tf.Scalar;
  });
}

/** What a model is trained to predict, per image of a training set (see `outputLoss`). */
export interface TrainingTargets {
  /** Stage-1 class of every image. */
  readonly labels: Int32Array;
  /** Subtype of every image (two-stage models). */
  readonly subtypes?: Int32Array;
  /** Per stage-1 class loss weights (length numClasses). */
  readonly classWeights?: readonly number[];
  /** Per subtype loss weights (length subtypes). */
  readonly subtypeWeights?: readonly number[];
  /**
   * Per row loss weights (length: the training set's rows, indexed like `labels`), multiplied with
   * the class weights in both heads' losses (e.g. boosting weights, ensemble-boosting.ts).
   */
  readonly sampleWeights?: Float32Array;
}

function take(values: Int32Array, indices: Int32Array): Int32Array {
  return Int32Array.from(indices, (i) => values[i]);
}

/**
 * The training loss of the model outputs `output` [n, numClasses (+ subtypes)] for the images
 * `indices` of `targets`: the (class-weighted) cross-entropy of the stage-1 softmax, plus for a
 * two-stage model (output wider than numClasses) the (subtype-weighted) cross-entropy of the
 * subtype softmax; `sampleWeights` multiply both heads' per-sample weights (each a batch mean of
 * weight x cross-entropy). Creates tensors: call inside tf.tidy or a gradient function.
 */
export function outputLoss(output: tf.Tensor2D, numClasses: number, targets: TrainingTargets, indices: Int32Array): tf.Scalar {
  const labels = take(targets.labels, indices);
  // Per-sample weights of the batch: class weight x row weight (the row's, looked up by its index,
  // so the weight follows its row through the shuffle and the pool's shards).
  const rows = targets.sampleWeights;
  const weightsOf = (classes: Int32Array, w: readonly number[] | undefined) =>
    w === undefined && rows === undefined
      ? undefined
      : tf.tensor1d(Float32Array.from(classes, (c, i) => (w === undefined ? 1 : w[c]) * (rows === undefined ? 1 : rows[indices[i]])), 'float32');
  const width = output.shape[1];
  if (width === numClasses) return crossEntropy(output, tf.tensor1d(labels, 'int32'), weightsOf(labels, targets.classWeights));
  if (targets.subtypes === undefined) throw new Error('outputLoss: a two-stage model needs subtype targets');
  const subtypes = take(targets.subtypes, indices);
  const stage1 = tf.slice(output, [0, 0], [-1, numClasses]) as tf.Tensor2D;
  const stage2 = tf.slice(output, [0, numClasses], [-1, width - numClasses]) as tf.Tensor2D;
  return tf.add(
    crossEntropy(stage1, tf.tensor1d(labels, 'int32'), weightsOf(labels, targets.classWeights)),
    crossEntropy(stage2, tf.tensor1d(subtypes, 'int32'), weightsOf(subtypes, targets.subtypeWeights)),
  ) as tf.Scalar;
}

/**
 * Class weights that give every class present in `labels` the same total weight (n / (k * n_c),
 * scikit-learn's 'balanced'), capped at `maxWeight` so a class with a handful of images cannot
 * dominate; classes absent from `labels` get 1 (they contribute nothing).
 */
export function balancedClassWeights(labels: Int32Array, numClasses: number, maxWeight = 10, rowWeights?: ArrayLike<number>): number[] {
  // With row weights (e.g. patientRowWeights), a class's size is the sum of its rows' weights.
  const counts = new Array<number>(numClasses).fill(0);
  let total = 0;
  labels.forEach((l, i) => {
    const w = rowWeights === undefined ? 1 : rowWeights[i];
    counts[l] += w;
    total += w;
  });
  const present = counts.filter((c) => c > 0).length;
  return counts.map((c) => (c === 0 ? 1 : Math.min(maxWeight, total / (present * c))));
}

/**
 * Row weights under which every patient weighs the same in the loss: each row 1 / (its patient's
 * rows), scaled so the weights average 1 (`groups`: each row's patient). A patient with 400 tile
 * rows and one with 20 then count alike; with them, balancedClassWeights(…, rowWeights) balances the
 * classes by patients.
 */
export function patientRowWeights(groups: readonly string[]): Float32Array {
  const rows = new Map<string, number>();
  for (const g of groups) rows.set(g, (rows.get(g) ?? 0) + 1);
  const scale = groups.length / rows.size;
  return Float32Array.from(groups, (g) => scale / (rows.get(g) as number));
}
