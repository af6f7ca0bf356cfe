/**
 * Inference in mini-batches and evaluation metrics. The synchronous functions block the event
 * loop for the whole set; a site client with a live socket should use the *Async variants, which
 * yield between mini-batches.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages, Metrics } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { assertBackendReady } from './backend';
import { checkImages, checkLabeledImages, imageBatch, modelGeometry } from './batches';
import { evaluationMetrics } from './metrics-extra';

export interface Evaluation {
  readonly metrics: Metrics;
  /** count x numClasses, row-major. */
  readonly probabilities: Float32Array;
}

function* predictBatches(
  model: tfl.LayersModel,
  images: Float32Array,
  count: number,
  imageSize: number,
  batchSize: number,
): Generator<void, Float32Array> {
  assertBackendReady();
  const geo = modelGeometry(model);
  if (geo.imageSize !== imageSize) {
    throw new ValidationError(`imageSize: the model takes ${geo.imageSize}px images, got ${imageSize}`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new ValidationError(`batchSize: must be an integer >= 1, got ${batchSize}`);
  }
  checkImages(images, count, imageSize, 'images');
  const k = geo.numClasses;
  const out = new Float32Array(count * k);
  for (let start = 0; start < count; start += batchSize) {
    const end = Math.min(count, start + batchSize);
    const probs = tf.tidy(() => {
      const x = imageBatch(images, imageSize, start, end);
      return model.predict(x, { batchSize: end - start }) as tf.Tensor;
    });
    try {
      out.set(probs.dataSync() as Float32Array, start * k);
    } finally {
      probs.dispose();
    }
    if (end < count) yield;
  }
  return out;
}

/** Softmax outputs for `count` images (count x numClasses), `batchSize` images at a time. */
export function predictProbabilities(
  model: tfl.LayersModel,
  images: Float32Array,
  count: number,
  imageSize: number,
  batchSize = 64,
): Float32Array {
  const it = predictBatches(model, images, count, imageSize, batchSize);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}

/** As predictProbabilities, yielding to the event loop between mini-batches. */
export async function predictProbabilitiesAsync(
  model: tfl.LayersModel,
  images: Float32Array,
  count: number,
  imageSize: number,
  batchSize = 64,
): Promise<Float32Array> {
  const it = predictBatches(model, images, count, imageSize, batchSize);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

function metricsFor(model: tfl.LayersModel, data: LabeledImages, probabilities: Float32Array): Evaluation {
  const { numClasses } = modelGeometry(model);
  return { metrics: evaluationMetrics(data.labels, probabilities, numClasses, data.groups), probabilities };
}

function checkData(model: tfl.LayersModel, data: LabeledImages): void {
  const { imageSize, numClasses } = modelGeometry(model);
  checkLabeledImages(data, imageSize, numClasses);
  if (data.count === 0) throw new ValidationError('data.count: there are no images to evaluate');
}

/** accuracy, loss, balancedAccuracy, macroF1, auc (2 classes), patientAccuracy (with groups). */
export function evaluateModel(model: tfl.LayersModel, data: LabeledImages, batchSize = 64): Evaluation {
  checkData(model, data);
  return metricsFor(model, data, predictProbabilities(model, data.images, data.count, data.imageSize, batchSize));
}

/** As evaluateModel, yielding to the event loop between mini-batches. */
export async function evaluateModelAsync(model: tfl.LayersModel, data: LabeledImages, batchSize = 64): Promise<Evaluation> {
  checkData(model, data);
  const p = await predictProbabilitiesAsync(model, data.images, data.count, data.imageSize, batchSize);
  return metricsFor(model, data, p);
}
