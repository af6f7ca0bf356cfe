/**
 * SimCLR's contrastive loss (Chen et al. 2020), NT-Xent: for a batch of N images seen in two
 * augmented views, projections z1 (view 1) and z2 (view 2), each [N, D]:
 *
 *   u = the 2N rows of [z1; z2], each scaled to unit length
 *   s(i, k) = u_i . u_k / tau
 *   l(i) = -log( exp(s(i, p(i))) / sum_{k != i} exp(s(i, k)) ),   p(i) = the other view of image i
 *   loss = mean over the 2N rows of l(i)
 *
 * Every other image of the batch (in both views) is a negative. Differentiable tfjs ops (matMul,
 * logSoftmax) with gradients on every backend, wasm included.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ValidationError } from '@histofed/fl-core';

/** Added to a row's similarity with itself: excluded from the softmax. */
const SELF = -1e9;

/** NT-Xent of two views' projections (z1, z2: [N, D], N >= 2) at temperature `tau` (> 0); a scalar. */
export function ntXentLoss(z1: tf.Tensor2D, z2: tf.Tensor2D, tau = 0.5): tf.Scalar {
  const [n, d] = z1.shape;
  if (z2.shape[0] !== n || z2.shape[1] !== d) throw new ValidationError(`ntXentLoss: the views' projections differ in shape: [${z1.shape.join(', ')}] and [${z2.shape.join(', ')}]`);
  if (n < 2) throw new ValidationError(`ntXentLoss: a batch needs at least 2 images (every other image is a negative), got ${n}`);
  if (!Number.isFinite(tau) || tau <= 0) throw new ValidationError(`ntXentLoss: tau must be a positive number, got ${tau}`);
  return tf.tidy(() => {
    const z = tf.concat([z1, z2], 0);
    const u = tf.div(z, tf.maximum(tf.norm(z, 'euclidean', 1, true), 1e-12)) as tf.Tensor2D;
    const logits = tf.add(tf.div(tf.matMul(u, u, false, true), tau), tf.mul(tf.eye(2 * n), SELF));
    const positive = Int32Array.from({ length: 2 * n }, (_, i) => (i < n ? i + n : i - n));
    const target = tf.oneHot(tf.tensor1d(positive, 'int32'), 2 * n);
    return tf.neg(tf.mean(tf.sum(tf.mul(target, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  });
}
