/**
 * Moves weights between a tfjs LayersModel and HistoFed's tfjs-free `WeightSet`.
 *
 * Names are the layer-scoped variable names ('conv1/kernel', 'bn1/moving_mean'), i.e. tfjs's
 * `originalName`, without the '_1' suffix tfjs adds when a second model with the same layer names
 * exists in the process. Order is `model.weights`: all trainable weights, then non-trainable ones
 * (batch-norm moving statistics), each group in layer order.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { NamedTensor, TensorSpec, WeightSet } from '@histofed/fl-core';
import { ValidationError, WeightLayoutError, assertSameLayout, layoutOf, namedTensor } from '@histofed/fl-core';

/** The process-independent name of a layer variable. */
export function weightName(v: tfl.LayerVariable): string {
  return v.originalName;
}

/** Names and shapes of a model's weights, without copying values. */
export function modelLayout(model: tfl.LayersModel): TensorSpec[] {
  return model.weights.map((v) => ({ name: weightName(v), shape: [...v.read().shape] }));
}

/** Names of the trainable weights (what the optimizer updates). */
export function trainableWeightNames(model: tfl.LayersModel): string[] {
  return model.trainableWeights.map(weightName);
}

/** Copies every weight (trainable and non-trainable) out of the model. */
export function getWeights(model: tfl.LayersModel): NamedTensor[] {
  return model.weights.map((v) => {
    const t = v.read();
    const values = new Float32Array(t.dataSync() as Float32Array); // copy: dataSync may alias
    return namedTensor(weightName(v), t.shape, values);
  });
}

/**
 * Writes `weights` into the model. The layout (names, order, shapes) must match the model's
 * exactly; the error names the first differing tensor, and nothing is written then. Temporary
 * tensors are disposed.
 */
export function setWeights(model: tfl.LayersModel, weights: WeightSet): void {
  assertSameLayout(modelLayout(model), layoutOf(weights), 'setWeights');
  for (const w of weights) {
    const size = tf.util.sizeFromShape([...w.shape]);
    if (w.values.length !== size) {
      throw new WeightLayoutError(
        `setWeights: tensor "${w.name}" has ${w.values.length} values for shape [${w.shape.join(', ')}] (${size})`,
      );
    }
  }
  const vars = model.weights;
  for (let i = 0; i < vars.length; i++) {
    const w = weights[i];
    // Copy: the cpu backend would otherwise keep the caller's array as the variable's storage.
    const t = tf.tensor(new Float32Array(w.values), [...w.shape], 'float32');
    try {
      vars[i].write(t);
    } finally {
      t.dispose();
    }
  }
}

/**
 * The round's global weights as tensors, one per trainable weight of `model` in its order (the
 * anchor of the FedProx proximal term). Checks the full layout first. The caller disposes them.
 */
export function trainableGlobalTensors(model: tfl.LayersModel, globalWeights: WeightSet): tf.Tensor[] {
  assertSameLayout(modelLayout(model), layoutOf(globalWeights), 'globalWeights');
  const byName = new Map(globalWeights.map((t) => [t.name, t]));
  return model.trainableWeights.map((v) => {
    const t = byName.get(weightName(v));
    if (t === undefined) throw new ValidationError(`globalWeights: missing tensor "${weightName(v)}"`);
    return tf.tensor(new Float32Array(t.values), [...t.shape], 'float32');
  });
}
