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
import { averageRowsPerImage, checkImages, checkLabeledImages, dataRowShape, imageBatch, imageLevel, modelGeometry, rowShapeOf, type RowShape } from './batches';
import { evaluationMetrics } from './metrics-extra';
import { stagedEvaluation, stagedMetricsSummary, type StagedReport } from './stage-metrics';

function* predictBatches(
  model: tfl.LayersModel,
  images: Float32Array,
  count: number,
  shape: RowShape,
  batchSize: number,
): Generator<void, Float32Array> {
  assertBackendReady();
  const geo = modelGeometry(model);
  if (geo.inputShape.join() !== rowShapeOf(shape).join()) {
    throw new ValidationError(
      typeof shape === 'number' && geo.imageSize > 0
        ? `imageSize: the model takes ${geo.imageSize}px images, got ${shape}`
        : `rows: the model takes rows of ${geo.inputShape.join('x')}, got ${rowShapeOf(shape).join('x')}`,
    );
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new ValidationError(`batchSize: must be an integer >= 1, got ${batchSize}`);
  }
  checkImages(images, count, shape, 'images');
  const k = geo.outputWidth;
  const out = new Float32Array(count * k);
  for (let start = 0; start < count; start += batchSize) {
    const end = Math.min(count, start + batchSize);
    const probs = tf.tidy(() => {
      const x = imageBatch(images, shape, start, end);
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

/**
 * Model outputs for `count` rows (count x output width, see modelGeometry), `batchSize` rows at a
 * time; `shape` is the image size of image rows or the row shape (e.g. [features]).
 */
export function predictProbabilities(
  model: tfl.LayersModel,
  images: Float32Array,
  count: number,
  shape: RowShape,
  batchSize = 64,
): Float32Array {
  const it = predictBatches(model, images, count, shape, batchSize);
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
  shape: RowShape,
  batchSize = 64,
): Promise<Float32Array> {
  const it = predictBatches(model, images, count, shape, batchSize);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** How to read a model's output row: stage-1 classes, then the subtypes of a two-stage model. */
export interface OutputLayout {
  readonly numClasses: number;
  readonly subtypeParents?: readonly number[];
}

export interface Evaluation {
  /**
   * Flat metrics (stage 1: accuracy, loss, balancedAccuracy, macroF1, f1, auc, patientAccuracy,
   * patientDiagnosisAccuracy, ece; stage 2 with subtypes: stage2Accuracy, stage2MacroF1,
   * stage2PatientAccuracy, stage2BalancedAccuracy).
   */
  readonly metrics: Metrics;
  /** The full report: per stage, per magnification, confusion matrices (stage-metrics.ts). */
  readonly report: StagedReport;
  /** count x output width, row-major: per image (the mean of its tiles' rows for tiled data). */
  readonly probabilities: Float32Array;
}

/** The stage-1 columns of two-stage output rows (or the rows themselves). */
function stage1Columns(probabilities: Float32Array, count: number, layout: OutputLayout): Float32Array {
  const k = layout.numClasses;
  const width = k + (layout.subtypeParents?.length ?? 0);
  if (width === k) return probabilities;
  const out = new Float32Array(count * k);
  for (let i = 0; i < count; i++) out.set(probabilities.subarray(i * width, i * width + k), i * k);
  return out;
}

/**
 * Metrics of output rows `probabilities` for `data` (also for an ensemble's averaged rows): one row
 * per image, or — for tiled data (`data.imageOf`) — either one per tile row (averaged per image
 * here) or already one per image. The stage-2 part needs `data.subtypes` and
 * `layout.subtypeParents`; per-magnification reports need `data.magnifications`.
 */
export function outputMetrics(rows: LabeledImages, outputs: Float32Array, layout: OutputLayout): Omit<Evaluation, 'probabilities'> {
  const { data, probabilities } = perImage(rows, outputs, layout);
  const report = stagedEvaluation({
    labels: data.labels,
    subtypes: data.subtypes,
    probabilities,
    numClasses: layout.numClasses,
    subtypeParents: layout.subtypeParents,
    patients: data.groups,
    magnifications: data.magnifications,
  });
  const stage1 = stage1Columns(probabilities, data.count, layout);
  const metrics: Metrics = { ...evaluationMetrics(data.labels, stage1, layout.numClasses, data.groups), ...stagedMetricsSummary(report) };
  // 'f1' is the F1 of class 1 (malignant): only meaningful for a two-class stage 1.
  if (layout.numClasses !== 2) delete metrics['f1'];
  return { metrics, report };
}

function widthOf(layout: OutputLayout): number {
  return layout.numClasses + (layout.subtypeParents?.length ?? 0);
}

/** Image-level data and outputs: tile rows averaged per image (already per-image outputs pass through). */
export function perImage(rows: LabeledImages, outputs: Float32Array, layout: OutputLayout): { data: LabeledImages; probabilities: Float32Array } {
  if (rows.imageOf === undefined) return { data: rows, probabilities: outputs };
  const data = imageLevel(rows);
  const width = widthOf(layout);
  if (outputs.length === data.count * width) return { data, probabilities: outputs };
  if (outputs.length !== rows.count * width) {
    throw new ValidationError(`outputs: ${outputs.length} values fit neither ${rows.count} tile rows nor ${data.count} images of width ${width}`);
  }
  return { data, probabilities: averageRowsPerImage(outputs, width, rows.imageOf, data.count) };
}

/** The layout of `model`'s output; a two-stage model needs `subtypeParents` (its spec's). */
function layoutOf(model: tfl.LayersModel, subtypeParents: readonly number[] | undefined): OutputLayout {
  const geo = modelGeometry(model);
  const given = subtypeParents?.length ?? 0;
  if (given !== geo.subtypes) {
    throw new ValidationError(
      geo.subtypes > 0
        ? `subtypeParents: the model has a subtype head of ${geo.subtypes} classes; pass its spec's subtypeParents (got ${given})`
        : `subtypeParents: the model has no subtype head, got ${given} subtype parents`,
    );
  }
  return { numClasses: geo.numClasses, subtypeParents: given > 0 ? subtypeParents : undefined };
}

function checkData(model: tfl.LayersModel, data: LabeledImages): void {
  const { inputShape, numClasses } = modelGeometry(model);
  checkLabeledImages(data, inputShape, numClasses);
  if (data.count === 0) throw new ValidationError('data.count: there are no images to evaluate');
}

export interface EvaluateOptions {
  readonly batchSize?: number;
  /** The subtype parents of a two-stage model (ModelSpec.subtypeParents). */
  readonly subtypeParents?: readonly number[];
}

/** Evaluates `model` on `data` (see Evaluation); blocks the event loop for the whole set. */
export function evaluateModel(model: tfl.LayersModel, data: LabeledImages, options: EvaluateOptions = {}): Evaluation {
  const layout = layoutOf(model, options.subtypeParents);
  checkData(model, data);
  const rows = predictProbabilities(model, data.images, data.count, dataRowShape(data), options.batchSize);
  const { probabilities } = perImage(data, rows, layout);
  return { ...outputMetrics(data, probabilities, layout), probabilities };
}

/** As evaluateModel, yielding to the event loop between mini-batches. */
export async function evaluateModelAsync(model: tfl.LayersModel, data: LabeledImages, options: EvaluateOptions = {}): Promise<Evaluation> {
  const layout = layoutOf(model, options.subtypeParents);
  checkData(model, data);
  const rows = await predictProbabilitiesAsync(model, data.images, data.count, dataRowShape(data), options.batchSize);
  const { probabilities } = perImage(data, rows, layout);
  return { ...outputMetrics(data, probabilities, layout), probabilities };
}
