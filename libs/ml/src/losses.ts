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
