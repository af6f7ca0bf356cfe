/**
 * `fit`: training for up to `maxEpochs` with early stopping on a validation set — the local-only
 * and centralized baselines and `histofed-site train` use it.
 *
 * Training runs in chunks of `epochsPerCheck` epochs (on a TrainingPool when one is given, else in
 * this thread with trainLocal); after each chunk the model is evaluated on `validation` and the
 * weights with the best monitored value are kept. Training stops after `patience` chunks without
 * improvement. Each chunk starts a fresh Adam optimizer (as a federated round does) and its own
 * shuffle seed.
 */
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages, Metrics, ModelSpec, NamedTensor, WeightSet } from '@histofed/fl-core';
import { HistoFedError, ValidationError } from '@histofed/fl-core';
import { evaluateModelAsync } from './evaluate';
import { buildModelAsync } from './model-spec';
import type { BackboneLocation } from './backbones/backbone';
import type { TrainingPool } from './parallel-training';
import { mixSeed } from './random';
import { trainLocal } from './train';
import type { TrainOptions } from './train';
import { getWeights, setWeights } from './weights-bridge';

export type FitMonitor = 'loss' | 'balancedAccuracy' | 'patientAccuracy';

export interface FitEpoch {
  /** Epochs trained so far. */
  readonly epoch: number;
  readonly maxEpochs: number;
  /** Mean training loss of the chunk's last epoch. */
  readonly trainLoss: number;
  /** Validation metrics after this chunk (absent without a validation set). */
  readonly validation?: Metrics;
  /** True when these weights are the best so far (and kept). */
  readonly best: boolean;
}

export interface FitOptions extends Omit<TrainOptions, 'epochs' | 'onProgress' | 'globalWeights'> {
  readonly maxEpochs: number;
  /** Epochs between two validations (default 1). */
  readonly epochsPerCheck?: number;
  /** Validations without improvement before stopping (default 3). */
  readonly patience?: number;
  /**
   * Epochs trained before early stopping may act and before weights may be kept as the best (default
   * 1): with a handful of validation patients the first epochs' values are noise, and the weights
   * of an undertrained first epoch must not win by chance.
   */
  readonly minEpochs?: number;
  /**
   * Exponential smoothing of the monitored validation value, in [0, 1): the value compared is
   * s = smoothing * s_prev + (1 - smoothing) * value (default 0: the raw value).
   */
  readonly smoothing?: number;
  /** What 'best' means on the validation set (default 'loss': lowest stage-1 cross-entropy). */
  readonly monitor?: FitMonitor;
  readonly validation?: LabeledImages;
  /** Trains on these workers (built-in model specs only). */
  readonly pool?: TrainingPool;
  /** FedProx anchor (with proximalMu > 0). */
  readonly globalWeights?: WeightSet;
  readonly onEpoch?: (e: FitEpoch) => void;
  /** Where a 'layers-model' backbone lives (fine-tuning specs). */
  readonly backbone?: BackboneLocation;
  readonly onBatch?: TrainOptions['onProgress'];
}

export interface FitResult {
  /** The kept weights (best on validation, else the last). */
  readonly weights: NamedTensor[];
  readonly bestEpoch: number;
  readonly epochsRun: number;
  readonly stoppedEarly: boolean;
  readonly history: readonly FitEpoch[];
  /** Validation metrics of the kept weights. */
  readonly validation?: Metrics;
}

/** The model to train: a spec (built here, or on the pool's workers) or a model built elsewhere (e.g. a transfer model). */
export type FitTarget = { readonly spec: ModelSpec; readonly initial: WeightSet } | { readonly model: tfl.LayersModel; readonly spec: ModelSpec };

function better(monitor: FitMonitor, a: number, b: number): boolean {
  return monitor === 'loss' ? a < b - 1e-9 : a > b + 1e-9;
}

function checkFitOptions(o: FitOptions): { perCheck: number; patience: number; monitor: FitMonitor; minEpochs: number; smoothing: number } {
  if (!Number.isInteger(o.maxEpochs) || o.maxEpochs < 1) throw new ValidationError(`maxEpochs: must be an integer >= 1, got ${o.maxEpochs}`);
  const perCheck = o.epochsPerCheck ?? 1;
  if (!Number.isInteger(perCheck) || perCheck < 1) throw new ValidationError(`epochsPerCheck: must be an integer >= 1, got ${perCheck}`);
  const patience = o.patience ?? 3;
  if (!Number.isInteger(patience) || patience < 1) throw new ValidationError(`patience: must be an integer >= 1, got ${patience}`);
  const monitor = o.monitor ?? 'loss';
  if (!['loss', 'balancedAccuracy', 'patientAccuracy'].includes(monitor)) {
    throw new ValidationError(`monitor: must be loss, balancedAccuracy or patientAccuracy, got ${String(monitor)}`);
  }
  if (o.validation !== undefined && o.validation.count === 0) throw new ValidationError('validation: the validation set has no images');
  const minEpochs = o.minEpochs ?? 1;
  if (!Number.isInteger(minEpochs) || minEpochs < 1) throw new ValidationError(`minEpochs: must be an integer >= 1, got ${minEpochs}`);
  const smoothing = o.smoothing ?? 0;
  if (!(smoothing >= 0 && smoothing < 1)) throw new ValidationError(`smoothing: must be in [0, 1), got ${smoothing}`);
  return { perCheck, patience, monitor, minEpochs: Math.min(minEpochs, o.maxEpochs), smoothing };
}

/**
 * The training images: fixed, or drawn anew for every chunk (1-based), e.g. a new augmentation
 * of the same images (the pool shares one image buffer per chunk, so augmentation is per chunk).
 */
export type FitTrainingSet = LabeledImages | ((chunk: number) => LabeledImages);

/** Trains with early stopping (see the module comment). */
export async function fit(target: FitTarget, trainingSet: FitTrainingSet, o: FitOptions): Promise<FitResult> {
  const { perCheck, patience, monitor, minEpochs, smoothing } = checkFitOptions(o);
  if ('model' in target && o.pool !== undefined) {
    throw new ValidationError('pool: a model built outside buildModel trains in this thread; omit the pool');
  }
  const model = 'model' in target ? target.model : await buildModelAsync(target.spec, 1, o.backbone ?? {});
  const owned = !('model' in target);
  try {
    if ('initial' in target) setWeights(model, target.initial);
    const trainOpts = {
      batchSize: o.batchSize,
      learningRate: o.learningRate,
      proximalMu: o.proximalMu,
      globalWeights: o.globalWeights,
      classWeights: o.classWeights,
      subtypeWeights: o.subtypeWeights,
      sampleWeights: o.sampleWeights,
      signal: o.signal,
      onProgress: o.onBatch,
      alignment: o.alignment,
    };
    let best: { weights: NamedTensor[]; epoch: number; value: number; metrics?: Metrics } | null = null;
    const history: FitEpoch[] = [];
    let sinceBest = 0;
    let epoch = 0;
    let chunk = 0;
    let smoothed: number | null = null;
    while (epoch < o.maxEpochs) {
      const epochs = Math.min(perCheck, o.maxEpochs - epoch);
      const seed = mixSeed(o.seed, ++chunk);
      const train = typeof trainingSet === 'function' ? trainingSet(chunk) : trainingSet;
      let trainLoss: number;
      if (o.pool !== undefined) {
        const r = await o.pool.train(target.spec, getWeights(model), train, { ...trainOpts, epochs, seed });
        setWeights(model, r.weights);
        trainLoss = r.loss;
      } else {
        trainLoss = (await trainLocal(model, train, { ...trainOpts, epochs, seed })).loss;
      }
      epoch += epochs;
      let validation: Metrics | undefined;
      let isBest = true;
      if (o.validation !== undefined) {
        validation = (await evaluateModelAsync(model, o.validation, { subtypeParents: target.spec.subtypeParents })).metrics;
        const raw = validation[monitor];
        if (raw === undefined) throw new HistoFedError('FIT_MONITOR', `monitor: the validation metrics have no "${monitor}" (patients unknown?)`);
        smoothed = smoothed === null ? raw : smoothing * smoothed + (1 - smoothing) * raw;
        const value = smoothed;
        isBest = epoch >= minEpochs && (best === null || better(monitor, value, best.value));
        if (isBest) best = { weights: getWeights(model), epoch, value, metrics: validation };
      } else {
        best = { weights: getWeights(model), epoch, value: trainLoss };
      }
      sinceBest = isBest ? 0 : sinceBest + 1;
      const e: FitEpoch = { epoch, maxEpochs: o.maxEpochs, trainLoss, validation, best: isBest };
      history.push(e);
      o.onEpoch?.(e);
      if (epoch >= minEpochs && sinceBest >= patience) break;
    }
    const kept = best as NonNullable<typeof best>;
    if ('model' in target) setWeights(model, kept.weights);
    return {
      weights: kept.weights,
      bestEpoch: kept.epoch,
      epochsRun: epoch,
      stoppedEarly: epoch < o.maxEpochs,
      history,
      validation: kept.metrics,
    };
  } finally {
    if (owned) model.dispose();
  }
}
