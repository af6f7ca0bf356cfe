/**
 * Local training of one federated round: a custom loop (Adam, optimizer.minimize) with a
 * deterministic per-epoch shuffle, softmax cross-entropy and the FedProx proximal term.
 *
 * The loop yields to the event loop between mini-batches (setImmediate), so a site client's
 * socket.io heartbeats and other I/O keep running while it trains.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages, WeightSet } from '@histofed/fl-core';
import { HistoFedError, ValidationError } from '@histofed/fl-core';
import { checkAlignmentOptions, prepareTrainingAlignment, type AlignmentOptions, type TrainingAlignment } from './alignment/training';
import { assertBackendReady } from './backend';
import { checkFinite, checkLabeledImages, imageBatch, modelGeometry } from './batches';
import { assertModelTrains } from './kernel-check';
import { outputLoss, proximalTerm, type TrainingTargets } from './losses';
import { mixSeed, shuffledIndices } from './random';
import { trainableGlobalTensors, weightName } from './weights-bridge';

export interface TrainProgress {
  /** 1-based epoch. */
  readonly epoch: number;
  readonly epochs: number;
  /** 1-based mini-batch within the epoch. */
  readonly batch: number;
  readonly batches: number;
  /** Cross-entropy of this mini-batch (class- and sample-weighted when those weights are given), before the step. */
  readonly loss: number;
  /** With `alignment`: the batch's alignment loss (without lambda), before the step (absent for a batch it is undefined for). */
  readonly alignment?: number;
}

export interface TrainOptions {
  readonly epochs: number;
  readonly batchSize: number;
  readonly learningRate: number;
  /** FedProx coefficient mu; 0 disables the proximal term. */
  readonly proximalMu: number;
  /** The round's global weights (full layout of the model); needed for the proximal term. */
  readonly globalWeights?: WeightSet;
  /** Seeds the per-epoch shuffle. */
  readonly seed: number;
  readonly onProgress?: (p: TrainProgress) => void;
  /** Per-class loss weights (length numClasses), e.g. `balancedClassWeights`. */
  readonly classWeights?: readonly number[];
  /** Per-subtype loss weights of a two-stage model's subtype head (length subtypes). */
  readonly subtypeWeights?: readonly number[];
  /**
   * One non-negative loss weight per row of the training data (length `data.count`; tile rows of an
   * image carry the image's weight, see `rowWeightsFromImages`), multiplied with the class weights
   * (and subtype weights) in both heads' losses; each batch's loss stays the mean of weight x
   * cross-entropy over its rows, so a row of weight 0 contributes nothing. Finite, >= 0, not all 0.
   * E.g. boosting weights (ensemble-boosting.ts).
   */
  readonly sampleWeights?: Float32Array;
  /** Stops training between mini-batches; trainLocal then rejects with code 'ABORTED'. */
  readonly signal?: AbortSignal;
  /**
   * Feature alignment (alignment/): adds lambda x the CORAL or MMD loss between each batch's
   * penultimate features and `reference` to the loss. This thread only: a TrainingPool refuses it.
   */
  readonly alignment?: AlignmentOptions;
}

export interface TrainResult {
  /** Mean cross-entropy over the last epoch's mini-batches (class- and sample-weighted when given; without the proximal term). */
  readonly loss: number;
  /** Number of training images (the sample count FedAvg weighs this update with). */
  readonly samples: number;
  readonly epochs: number;
  /** With `alignment`: mean alignment loss (without lambda) over the last epoch's mini-batches. */
  readonly alignment?: number;
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Index of the first variable holding NaN or an infinity, or null. */
function firstNonFinite(vars: readonly tf.Variable[]): number | null {
  for (let i = 0; i < vars.length; i++) {
    const v = vars[i].dataSync();
    for (let j = 0; j < v.length; j++) if (v[j] - v[j] !== 0) return i;
  }
  return null;
}

/**
 * Checks training options (also used by the parallel trainer before it starts its workers);
 * `rows` (the training data's count) is what `sampleWeights` must match.
 */
export function checkTrainOptions(opts: TrainOptions, numClasses: number, subtypes = 0, rows?: number): void {
  if (!Number.isInteger(opts.epochs) || opts.epochs < 1) {
    throw new ValidationError(`epochs: must be an integer >= 1, got ${opts.epochs}`);
  }
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) {
    throw new ValidationError(`batchSize: must be an integer >= 1, got ${opts.batchSize}`);
  }
  if (!Number.isFinite(opts.learningRate) || opts.learningRate <= 0) {
    throw new ValidationError(`learningRate: must be a positive number, got ${opts.learningRate}`);
  }
  if (!Number.isFinite(opts.proximalMu) || opts.proximalMu < 0) {
    throw new ValidationError(`proximalMu: must be a number >= 0, got ${opts.proximalMu}`);
  }
  if (!Number.isInteger(opts.seed)) throw new ValidationError(`seed: must be an integer, got ${opts.seed}`);
  checkWeights(opts.classWeights, numClasses, 'classWeights');
  if (opts.subtypeWeights !== undefined && subtypes === 0) {
    throw new ValidationError('subtypeWeights: the model has no subtype head');
  }
  checkWeights(opts.subtypeWeights, subtypes, 'subtypeWeights');
  if (opts.sampleWeights !== undefined) checkSampleWeights(opts.sampleWeights, rows);
  if (opts.alignment !== undefined) checkAlignmentOptions(opts.alignment);
}

function checkWeights(weights: readonly number[] | undefined, n: number, what: string): void {
  if (weights === undefined) return;
  if (weights.length !== n) throw new ValidationError(`${what}: expected ${n} weights, got ${weights.length}`);
  weights.forEach((w, i) => {
    if (!Number.isFinite(w) || w < 0) throw new ValidationError(`${what}[${i}]: must be >= 0, got ${w}`);
  });
}

function checkSampleWeights(weights: Float32Array, rows: number | undefined): void {
  if (!(weights instanceof Float32Array)) throw new ValidationError('sampleWeights: must be a Float32Array (one weight per training row)');
  if (rows !== undefined && weights.length !== rows) {
    throw new ValidationError(`sampleWeights: expected one weight per training row (${rows}), got ${weights.length}`);
  }
  let any = false;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    if (!Number.isFinite(w) || w < 0) throw new ValidationError(`sampleWeights[${i}]: must be a finite number >= 0, got ${w}`);
    if (w > 0) any = true;
  }
  if (!any) throw new ValidationError('sampleWeights: every weight is 0; at least one training row must count');
}

/**
 * Trains `model` in place on `data`. Tensors created here are disposed; `tf.memory().numTensors`
 * is the same before and after (after the first call has built the model's lazy state).
 */
export async function trainLocal(model: tfl.LayersModel, data: LabeledImages, opts: TrainOptions): Promise<TrainResult> {
  assertBackendReady();
  const { inputShape, numClasses, subtypes } = modelGeometry(model);
  checkTrainOptions(opts, numClasses, subtypes, data.count);
  checkLabeledImages(data, inputShape, numClasses, 'data', subtypes);
  if (data.count === 0) throw new ValidationError('data.count: there are no training images');
  checkFinite(data.images, inputShape);
  assertModelTrains(model);

  const trainable = model.trainableWeights;
  const vars = trainable.map((v) => v.read() as tf.Variable);
  const useProx = opts.proximalMu > 0 && opts.globalWeights !== undefined;
  const targets: TrainingTargets = {
    labels: data.labels,
    subtypes: subtypes > 0 ? data.subtypes : undefined,
    classWeights: opts.classWeights,
    subtypeWeights: opts.subtypeWeights,
    sampleWeights: opts.sampleWeights,
  };

  let globals: tf.Tensor[] = [];
  let alignment: TrainingAlignment | null = null;
  const optimizer = tf.train.adam(opts.learningRate);
  try {
    if (opts.alignment !== undefined) alignment = prepareTrainingAlignment(model, opts.alignment);
    const align = alignment;
    if (useProx) {
      globals = trainableGlobalTensors(model, opts.globalWeights as WeightSet);
    }

    const batches = Math.ceil(data.count / opts.batchSize);
    let lastEpochLoss = NaN;
    let lastEpochAlignment: number | undefined;
    for (let epoch = 1; epoch <= opts.epochs; epoch++) {
      const order = shuffledIndices(data.count, mixSeed(opts.seed, epoch));
      let sum = 0;
      let alignSum = 0;
      let alignBatches = 0;
      for (let b = 0; b < batches; b++) {
        if (opts.signal?.aborted) throw new HistoFedError('ABORTED', `training aborted in epoch ${epoch}, batch ${b + 1}`);
        const start = b * opts.batchSize;
        const end = Math.min(data.count, start + opts.batchSize);
        const indices = order.subarray(start, end);

        let kept: tf.Scalar | undefined;
        let keptAlign: tf.Scalar | undefined;
        let loss: tf.Scalar;
        try {
          loss = tf.tidy(() => {
            const x = imageBatch(data.images, inputShape, start, end, order);
            const cost = optimizer.minimize(
              () => {
                let output: tf.Tensor2D;
                let total: tf.Scalar;
                if (align === null) {
                  output = model.apply(x, { training: true }) as tf.Tensor2D;
                  total = outputLoss(output, numClasses, targets, indices);
                } else {
                  const forward = align.forward(x);
                  output = forward.output;
                  total = outputLoss(output, numClasses, targets, indices);
                  const a = align.loss(forward.features);
                  if (a !== null) {
                    keptAlign = tf.keep(a);
                    kept = tf.keep(total);
                    total = tf.add(total, tf.mul(a, align.lambda)) as tf.Scalar;
                  }
                }
                if (!useProx) return total;
                if (kept === undefined) kept = tf.keep(total); // the data loss, reported without the proximal term
                return tf.add(total, proximalTerm(vars, globals, opts.proximalMu)) as tf.Scalar;
              },
              true,
              vars,
            ) as tf.Scalar;
            return kept !== undefined ? kept : cost;
          });
        } catch (e) {
          kept?.dispose();
          keptAlign?.dispose();
          throw e;
        }
        const value = (await loss.data())[0];
        loss.dispose();
        let alignValue: number | undefined;
        if (keptAlign !== undefined) {
          alignValue = (await keptAlign.data())[0];
          keptAlign.dispose();
          alignSum += alignValue;
          alignBatches++;
        }
        if (!Number.isFinite(value)) {
          throw new HistoFedError(
            'TRAINING_DIVERGED',
            `training diverged: the loss is ${value} in epoch ${epoch}, batch ${b + 1}; lower the learning rate`,
          );
        }
        sum += value;
        opts.onProgress?.({ epoch, epochs: opts.epochs, batch: b + 1, batches, loss: value, ...(alignValue !== undefined ? { alignment: alignValue } : {}) });
        await yieldToEventLoop();
      }
      lastEpochLoss = sum / batches;
      lastEpochAlignment = alignBatches > 0 ? alignSum / alignBatches : undefined;
      const bad = firstNonFinite(vars);
      if (bad !== null) {
        throw new HistoFedError(
          'TRAINING_DIVERGED',
          `training diverged: weight "${weightName(trainable[bad])}" is not finite after epoch ${epoch}; lower the learning rate`,
        );
      }
    }
    return { loss: lastEpochLoss, samples: data.count, epochs: opts.epochs, ...(lastEpochAlignment !== undefined ? { alignment: lastEpochAlignment } : {}) };
  } finally {
    alignment?.dispose();
    optimizer.dispose();
    for (const g of globals) g.dispose();
  }
}
