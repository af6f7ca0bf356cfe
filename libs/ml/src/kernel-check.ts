/**
 * Fails before training when the active backend lacks a kernel that training the model needs
 * (e.g. a custom layer's gradient on a backend without it), naming the kernel, instead of failing in
 * the middle of a round.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { HistoFedError } from '@histofed/fl-core';
import { modelGeometry } from './batches';

export class MissingKernelError extends HistoFedError {
  constructor(
    readonly kernel: string,
    readonly backend: string,
  ) {
    super(
      'MISSING_KERNEL',
      `the ${backend} backend has no '${kernel}' kernel, which training this model needs; ` +
        `choose another --backend or a model without that operation`,
    );
  }
}

const NOT_REGISTERED = /Kernel '([^']+)' not registered for backend '([^']+)'/;

/**
 * One forward and backward pass on a single blank image (or input row) (inference mode, so batch-norm statistics
 * and dropout are untouched; gradients are computed and discarded, weights do not change).
 * Every gradient kernel the training step uses runs once; a missing one throws MissingKernelError.
 */
export function assertModelTrains(model: tfl.LayersModel): void {
  const { inputShape } = modelGeometry(model);
  const vars = model.trainableWeights.map((v) => v.read() as tf.Variable);
  try {
    tf.tidy(() => {
      const x = tf.zeros([1, ...inputShape]);
      const { value, grads } = tf.variableGrads(() => tf.sum(model.apply(x, { training: false }) as tf.Tensor), vars);
      value.dispose();
      Object.values(grads).forEach((g) => g.dispose());
    });
  } catch (e) {
    const m = NOT_REGISTERED.exec((e as Error).message);
    if (m) throw new MissingKernelError(m[1], m[2]);
    throw e;
  }
}
