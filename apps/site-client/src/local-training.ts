import { LabeledImages, Metrics, WeightSet, isTwoStage, parameterCount } from '@histofed/fl-core';
import {
  TrainOptions,
  TrainResult,
  TrainingPool,
  balancedClassWeights,
  patientRowWeights,
  buildModelAsync,
  isFrozenBackbone,
  evaluateModelAsync,
  featureMoments,
  fromPlainMoments,
  PlainFeatureMoments,
  toPlainMoments,
  getWeights,
  setWeights,
  trainLocal,
} from '@histofed/ml';
import { RoundConfig, SiteProgressStage, TrainTask } from '@histofed/protocol';
import { augmentTrainingSet } from './augment-training-set';
import { boostingRowWeights } from './boosting';
import { SiteData } from './site-data';
import { SiteLogger } from './site-logger';

export interface LocalResult {
  readonly weights: WeightSet;
  readonly numSamples: number;
  readonly metrics: Metrics;
  /** Feature alignment: the moments of the trained model's penultimate features on the training rows. */
  readonly featureMoments?: PlainFeatureMoments;
}

/** Where a task is (issue 17: sent to the coordinator, throttled, for the dashboard): a stage, and while training the epoch and batch. */
export type TaskProgress = (
  stage: SiteProgressStage,
  training?: { epoch: number; epochs: number; batch: number; batches: number; loss: number },
) => void;

/** The loss weights a round asks for: inverse class (and subtype) frequencies of this site's training images. */
export function classWeightsFor(
  cfg: Pick<RoundConfig, 'classWeighting' | 'model'>,
  train: LabeledImages,
  rowWeights?: Float32Array,
): Pick<TrainOptions, 'classWeights' | 'subtypeWeights'> {
  if (cfg.classWeighting !== 'balanced') return {};
  const weights: { classWeights: number[]; subtypeWeights?: number[] } = {
    classWeights: balancedClassWeights(train.labels, cfg.model.numClasses, undefined, rowWeights),
  };
  if (isTwoStage(cfg.model) && train.subtypes !== undefined) {
    weights.subtypeWeights = balancedClassWeights(train.subtypes, (cfg.model.subtypeParents as readonly number[]).length, undefined, rowWeights);
  }
  return weights;
}

/** A round's patient weighting (patientWeighting): every training patient's rows share one weight; undefined: each row alike. */
export function patientWeightsFor(cfg: Pick<RoundConfig, 'patientWeighting'>, train: LabeledImages): Float32Array | undefined {
  if (!cfg.patientWeighting) return undefined;
  if (train.groups === undefined || train.groups.length !== train.count) throw new Error('patient weighting: the training rows carry no patient ids');
  return patientRowWeights(train.groups);
}

/**
 * One task on local data: start from the global weights, train with the FedProx proximal term
 * toward them (on the worker pool when there is one, else on this thread), evaluate on the local
 * validation split.
 */
export async function runLocalTraining(
  task: TrainTask,
  global: WeightSet,
  data: SiteData,
  logger: SiteLogger,
  pool?: TrainingPool,
  progress: TaskProgress = () => undefined,
  /** A 'boost' task: the current ensemble's members (task.boosting.members, fetched), whose errors weigh the training images. */
  boostingMembers?: readonly WeightSet[],
): Promise<LocalResult> {
  const cfg = task.config;
  progress('preparing');
  let lastProgress = 0;
  const request = {
    spec: cfg.model,
    stain: cfg.stainNormalization,
    augment: cfg.augment,
    stainAugmentation: cfg.stainAugmentation,
    onProgress: (p: { split: string; images: number; total: number; rows: number; cached: number }) => {
      const now = Date.now();
      if (p.images === p.total || now - lastProgress > 5000) {
        lastProgress = now;
        logger.event('info', 'tile features', { round: cfg.round, ...p });
      }
    },
  };
  const decoded = await data.train(request);
  // Whole images get a new augmentation every round; tiles have augmented views (their features are computed once).
  const train = cfg.augment && cfg.model.tiles === undefined ? augmentTrainingSet(decoded, cfg.seed, cfg.stainAugmentation ?? 0) : decoded;
  const validation = await data.validation(request);
  // Patient weighting: every training patient's rows share one weight (boosting's image weights multiply it).
  const patientWeights = patientWeightsFor(cfg, train);
  let sampleWeights: Float32Array | undefined = patientWeights;
  if (task.boosting) {
    if (!boostingMembers || boostingMembers.length !== task.boosting.members.length) {
      throw new Error(`boosting: ${boostingMembers?.length ?? 0} members fetched, the task names ${task.boosting.members.length}`);
    }
    const b = await boostingRowWeights(cfg.model, boostingMembers, train, task.boosting, data.backboneDir);
    sampleWeights = patientWeights ? Float32Array.from(b.weights, (w, i) => w * patientWeights[i]) : b.weights;
    logger.event('info', 'boosting weights', {
      runId: cfg.runId,
      round: cfg.round,
      members: boostingMembers.length,
      images: b.images,
      ensembleTrainingAccuracy: Number(b.ensembleAccuracy.toFixed(4)),
      minWeight: Number(b.minWeight.toFixed(4)),
      maxWeight: Number(b.maxWeight.toFixed(4)),
    });
  }
  const model = await buildModelAsync(cfg.model, cfg.seed, { dir: data.backboneDir });
  try {
    setWeights(model, global);
    logger.event('info', 'training started', {
      runId: cfg.runId,
      round: cfg.round,
      kind: task.kind,
      samples: imageCount(train),
      rows: train.count,
      epochs: cfg.localEpochs,
      parameters: parameterCount(global),
      workers: pool && !isFrozenBackbone(cfg.model) && !cfg.alignment ? pool.size : 1,
    });
    const started = Date.now();
    let lastLogged = 0;
    const options: TrainOptions = {
      epochs: cfg.localEpochs,
      batchSize: cfg.batchSize,
      learningRate: cfg.learningRate,
      proximalMu: cfg.proximalMu,
      globalWeights: global,
      seed: cfg.seed,
      ...classWeightsFor(cfg, train, patientWeights),
      ...(sampleWeights ? { sampleWeights } : {}),
      ...(cfg.alignment?.reference
        ? {
            alignment: {
              method: cfg.alignment.method,
              lambda: cfg.alignment.lambda,
              reference: fromPlainMoments(cfg.alignment.reference, 'round config alignment.reference'),
            },
          }
        : {}),
      onProgress: (p) => {
        progress('training', { epoch: p.epoch, epochs: p.epochs, batch: p.batch, batches: p.batches, loss: p.loss });
        const now = Date.now();
        if (p.batch === p.batches || now - lastLogged > 5000) {
          lastLogged = now;
          logger.event('info', 'training progress', { round: cfg.round, ...p });
        }
      },
    };
    let fit: TrainResult;
    // Heads on a frozen backbone's features are a few thousand parameters: this thread trains them
    // faster than the pool's per-step messages would.
    // The alignment term needs every batch's features in one step: this thread trains then.
    if (pool && !isFrozenBackbone(cfg.model) && !cfg.alignment) {
      const r = await pool.train(cfg.model, global, train, options);
      setWeights(model, r.weights);
      fit = r;
    } else {
      fit = await trainLocal(model, train, options);
    }
    progress('evaluating');
    const evaluation =
      validation.count > 0 ? (await evaluateModelAsync(model, validation, { subtypeParents: cfg.model.subtypeParents })).metrics : {};
    const metrics: Metrics = {
      trainLoss: fit.loss,
      ...Object.fromEntries(Object.entries(evaluation).map(([k, v]) => [`val${k[0].toUpperCase()}${k.slice(1)}`, v])),
      trainSeconds: (Date.now() - started) / 1000,
    };
    if (fit.alignment !== undefined) metrics['alignmentLoss'] = fit.alignment;
    logger.event('info', 'training finished', { round: cfg.round, kind: task.kind, metrics });
    const moments = cfg.alignment ? toPlainMoments(await featureMoments(model, train)) : undefined;
    // FedAvg weighs an update by the site's training images (not by its tile rows).
    return { weights: getWeights(model), numSamples: imageCount(train), metrics, ...(moments ? { featureMoments: moments } : {}) };
  } finally {
    model.dispose();
  }
}

/** Images of a training set: distinct images of tile rows, else one row per image. */
function imageCount(data: LabeledImages): number {
  return data.imageOf ? new Set(data.imageOf).size : data.count;
}
