/**
 * `histofed-site train --data DIR --out MODEL_DIR`: trains a model on one BreakHis folder — a
 * hospital's local-only model, or the centralized baseline when the folder holds everyone's data —
 * with early stopping on a patient-wise validation split, and saves it as a HistoFed model
 * directory (`histofed-coordinator evaluate` reads it).
 */
import {
  BREAKHIS_SUBTYPE_CODES,
  BREAKHIS_SUBTYPE_PARENTS,
  DEFAULT_BACKBONE,
  DEFAULT_RUN_MODEL,
  STAGE1_CLASSES,
  ValidationError,
  type LabeledImages,
  type ModelSpec,
} from '@histofed/fl-core';
import {
  DEFAULT_MACENKO_TARGET,
  FeatureCache,
  ImageCache,
  assertHasImages,
  createStainNormalizer,
  defaultImageCacheDir,
  featureCacheDirFor,
  loadModelInputs,
  patientWiseSplit,
  readBreakHisTree,
  type TileRowExtractor,
} from '@histofed/data';
import {
  LAYERS_MODEL_BACKBONE,
  MODEL_KINDS,
  isBackboneKind,
  balancedClassWeights,
  buildModelAsync,
  completeModelSpec,
  isFrozenBackbone,
  buildTransferModel,
  createTrainingPool,
  currentBackend,
  describeModel,
  fit,
  getWeights,
  loadLayersModelDir,
  saveModel,
  setTrainableBaseLayers,
  preprocessingFor,
  setWeights,
  shareImages,
  tileFeatureExtractor,
  type FitEpoch,
  type FitResult,
  type TrainingPool,
} from '@histofed/ml';
import { augmentTrainingSet } from './augment-training-set';

export interface TrainFlags {
  data: string;
  out: string;
  epochs: string;
  imageSize?: string;
  model: string;
  /** Backbone models: a tfjs Layers model directory instead of the built-in ImageNet MobileNetV2. */
  backbone?: string;
  cut?: string;
  trainFrom?: string;
  tileScale?: string;
  views?: string;
  stainNormalization?: string;
  minEpochs?: string;
  /** After choosing the epoch count on the validation patients, train again on every patient (default true). */
  refit?: boolean;
  singleStage?: boolean;
  initFrom?: string;
  freezeEpochs: string;
  unfreezeLayers: string;
  validationFraction: string;
  patience: string;
  batchSize?: string;
  learningRate?: string;
  seed: string;
  augment?: boolean;
  trainWorkers: string;
  cacheDir?: string;
  cache: boolean;
  provenance: string;
  json?: boolean;
}

export function num(flag: string, text: string, check: (n: number) => boolean, expected: string): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || !check(n)) throw new ValidationError(`${flag}: expected ${expected}, got "${text}"`);
  return n;
}

export interface TrainSummary {
  readonly out: string;
  readonly spec: ModelSpec;
  readonly backend: string | null;
  readonly parameters: number;
  readonly multiplyAdds: number;
  readonly images: { readonly train: number; readonly validation: number };
  readonly patients: { readonly train: number; readonly validation: number };
  readonly epochsRun: number;
  readonly bestEpoch: number;
  readonly stoppedEarly: boolean;
  /** Validation metrics of the selected epoch (before the refit, which has no held-out patients). */
  readonly validation: Record<string, number> | null;
  readonly history: readonly FitEpoch[];
  /** Epochs of the final training on every patient (null without --refit or with --init-from). */
  readonly refitEpochs: number | null;
  readonly initFrom: string | null;
  readonly wallSeconds: number;
}

export async function trainCommand(f: TrainFlags, progress: (line: string, e?: FitEpoch) => void): Promise<TrainSummary> {
  const started = Date.now();
  const maxEpochs = num('--epochs', f.epochs, (n) => Number.isInteger(n) && n >= 1, 'an integer >= 1');
  const isBackbone = isBackboneKind(f.model);
  const imageSize = num('--image-size', f.imageSize ?? (isBackbone ? '224' : '64'), (n) => Number.isInteger(n) && n >= 16 && n <= 512, 'an integer in [16, 512]');
  const minEpochs = num('--min-epochs', f.minEpochs ?? '1', (n) => Number.isInteger(n) && n >= 1, 'an integer >= 1');
  const validationFraction = num('--validation-fraction', f.validationFraction, (n) => n > 0 && n < 1, 'a number in (0, 1)');
  const patience = num('--patience', f.patience, (n) => Number.isInteger(n) && n >= 1, 'an integer >= 1');
  // Heads on tile features see ~20 rows per image: larger batches, a smaller step (a bag model sees one row per image).
  const batchSize = num('--batch-size', f.batchSize ?? (f.model === 'backbone-head' ? '32' : '16'), (n) => Number.isInteger(n) && n >= 1, 'an integer >= 1');
  const learningRate = num('--learning-rate', f.learningRate ?? (isBackbone ? '0.001' : '0.002'), (n) => n > 0 && n <= 1, 'a number in (0, 1]');
  const seed = num('--seed', f.seed, Number.isInteger, 'an integer');
  const freezeEpochs = num('--freeze-epochs', f.freezeEpochs, (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0');
  const unfreezeLayers = f.unfreezeLayers === 'all' ? Infinity : num('--unfreeze-layers', f.unfreezeLayers, (n) => Number.isInteger(n) && n >= 0, "an integer >= 0 or 'all'");
  if (!(MODEL_KINDS as readonly string[]).includes(f.model)) throw new ValidationError(`--model: expected one of ${MODEL_KINDS.join(', ')}, got "${f.model}"`);
  if (!['local', 'centralized'].includes(f.provenance)) throw new ValidationError(`--provenance: expected local or centralized, got "${f.provenance}"`);
  if (!isBackbone && (f.backbone || f.cut || f.trainFrom || f.tileScale || f.views)) {
    throw new ValidationError('--backbone, --cut, --train-from, --tile-scale and --views apply to --model backbone-head, attention-mil and transformer-mil');
  }
  if (f.initFrom && isBackbone) throw new ValidationError('--init-from applies to the compact CNNs (--model se-cnn, attention-cnn, small-cnn)');
  // Augmented views cost nothing per epoch (their features are computed once): on by default for backbone models.
  const augment = f.augment ?? isBackbone;
  const stainName = f.stainNormalization ?? 'none';
  if (stainName !== 'none' && stainName !== 'macenko') throw new ValidationError(`--stain-normalization: expected none or macenko, got "${stainName}"`);
  const stain = stainName === 'macenko' ? { ...DEFAULT_MACENKO_TARGET } : null;
  const defaultTiles = DEFAULT_RUN_MODEL.tiles as NonNullable<ModelSpec['tiles']>;
  const spec: ModelSpec = await completeModelSpec(
    {
      kind: f.model,
      imageSize,
      numClasses: 2,
      ...(f.singleStage ? {} : { subtypeParents: [...BREAKHIS_SUBTYPE_PARENTS] }),
      ...(isBackbone
        ? {
            backbone: {
              ...DEFAULT_BACKBONE,
              ...(f.backbone ? { name: LAYERS_MODEL_BACKBONE } : {}),
              ...(f.cut ? { cut: f.cut } : {}),
              ...(f.trainFrom ? { trainFrom: f.trainFrom } : {}),
            },
            tiles: {
              scale: num('--tile-scale', f.tileScale ?? String(defaultTiles.scale), (n) => n >= 0.05 && n <= 4, 'a number in [0.05, 4]'),
              views: num('--views', f.views ?? String(defaultTiles.views), (n) => Number.isInteger(n) && n >= 0 && n <= 256, 'an integer in [0, 256]'),
            },
            // The bag models take their own defaults (mil/bag-models.ts).
            options: f.model === 'backbone-head' ? { ...DEFAULT_RUN_MODEL.options } : {},
          }
        : {}),
    },
    { dir: f.backbone },
  );

  const dataset = assertHasImages(await readBreakHisTree(f.data));
  const split = patientWiseSplit(dataset.images, { testFraction: validationFraction, seed });
  if (split.test.length === 0) throw new ValidationError(`--data ${f.data}: too few patients for a validation split`);
  const cacheDir = f.cacheDir ?? defaultImageCacheDir(process.env);
  const cache = f.cache ? new ImageCache({ dir: cacheDir }) : undefined;
  const featureCache = f.cache ? new FeatureCache({ dir: featureCacheDirFor(cacheDir) }) : undefined;
  const workers = f.trainWorkers === 'auto' ? undefined : num('--train-workers', f.trainWorkers, (n) => Number.isInteger(n) && n >= 1, "'auto' or an integer >= 1");
  let pool: TrainingPool | undefined;
  const patients = (xs: readonly { patientId: string }[]) => new Set(xs.map((i) => i.patientId)).size;
  try {
    pool = workers === 1 || f.initFrom ? undefined : await createTrainingPool({ workers, backboneDir: f.backbone });
    let extractor: TileRowExtractor | undefined;
    if (spec.backbone) {
      extractor = pool ? await pool.featureExtractor(spec.backbone, imageSize, f.backbone) : await tileFeatureExtractor(spec.backbone, imageSize, { dir: f.backbone });
      progress(
        `backbone ${spec.backbone.name} (SHA-256 ${spec.backbone.sha256?.slice(0, 16)}…) cut at ${spec.backbone.cut}: ` +
          (spec.backbone.trainFrom
            ? `fine-tuning from ${spec.backbone.trainFrom} on the cached ${extractor.rowShape.join('x')} feature map of each ${imageSize} px tile `
            : `${spec.backbone.features} features per ${imageSize} px tile `) +
          `at scale ${spec.tiles?.scale}, ${spec.tiles?.views} training views per image${augment ? ' (augmented)' : ''}`,
      );
    }
    const normalize = stain ? createStainNormalizer(stain) : undefined;
    const inputs = (images: typeof split.train, training: boolean) =>
      loadModelInputs(images, spec, {
        training,
        augment,
        extractor,
        featureCache,
        imageCache: cache,
        transform: normalize ? { key: JSON.stringify(stain), apply: (rgb) => normalize(rgb) } : undefined,
        onProgress: (p) => {
          if (p.images % 25 === 0 || p.images === p.total) progress(`${training ? 'training' : 'validation'} tiles: ${p.images}/${p.total} images, ${p.rows} tiles (${p.cached} from the cache)`);
        },
      });
    const train = shareImages(await inputs(split.train, true));
    const validation = await inputs(split.test, false);
    const everyone = async () => shareImages(await inputs([...split.train, ...split.test], true));
    progress(
      `training ${spec.kind}${spec.subtypeParents ? ' two-stage' : ''} at ${imageSize}px on ${split.train.length} images of ${patients(split.train)} patients` +
        `${train.imageOf ? ` (${train.count} tiles)` : ''}; validation ${split.test.length} images of ${patients(split.test)} patients (patient-wise)`,
    );
    // Heads on frozen features train in this thread (a few thousand parameters); images and fine-tuned blocks on the pool.
    return await trainAndSave(f, spec, {
      train,
      validation,
      everyone,
      split,
      pool: isFrozenBackbone(spec) ? undefined : pool,
      extractor,
      stain,
      seed,
      maxEpochs,
      minEpochs,
      patience,
      batchSize,
      learningRate,
      freezeEpochs,
      unfreezeLayers,
      started,
      progress,
    });
  } finally {
    await pool?.close();
  }
}

interface TrainContext {
  readonly train: LabeledImages;
  readonly validation: LabeledImages;
  /** Training inputs of every patient (training and validation), for the refit. */
  readonly everyone: () => Promise<LabeledImages>;
  readonly split: { readonly train: readonly { patientId: string }[]; readonly test: readonly { patientId: string }[] };
  readonly pool: TrainingPool | undefined;
  readonly extractor: TileRowExtractor | undefined;
  readonly stain: Record<string, unknown> | null;
  readonly seed: number;
  readonly maxEpochs: number;
  readonly minEpochs: number;
  readonly patience: number;
  readonly batchSize: number;
  readonly learningRate: number;
  readonly freezeEpochs: number;
  readonly unfreezeLayers: number;
  readonly started: number;
  readonly progress: (line: string, e?: FitEpoch) => void;
}

async function trainAndSave(f: TrainFlags, spec: ModelSpec, c: TrainContext): Promise<TrainSummary> {
  const { train, validation, split, seed, maxEpochs, minEpochs, patience, batchSize, learningRate, freezeEpochs, unfreezeLayers, progress } = c;
  const patients = (xs: readonly { patientId: string }[]) => new Set(xs.map((i) => i.patientId)).size;
  const weights = {
    classWeights: balancedClassWeights(train.labels, 2),
    ...(spec.subtypeParents && train.subtypes ? { subtypeWeights: balancedClassWeights(train.subtypes, spec.subtypeParents.length) } : {}),
  };
  // Whole images get a new augmentation every epoch; tiles carry augmented views (features computed once).
  const trainingSet = f.augment && spec.tiles === undefined ? (chunk: number) => augmentTrainingSet(train, seed * 7919 + chunk) : train;
  const onEpoch = (e: FitEpoch) =>
    progress(
      `epoch ${e.epoch}/${e.maxEpochs} train loss ${e.trainLoss.toFixed(4)}` +
        (e.validation
          ? ` validation loss ${e.validation['loss'].toFixed(4)} accuracy ${e.validation['accuracy'].toFixed(3)} patient ${(e.validation['patientAccuracy'] ?? NaN).toFixed(3)}`
          : '') +
        (e.best ? ' (best so far)' : ''),
      e,
    );
  const common = { batchSize, learningRate, proximalMu: 0, seed, patience, minEpochs, validation, onEpoch, ...weights };

  let result: FitResult;
  let refitEpochs: number | null = null;
  let model;
  let initFrom: string | null = null;
  if (f.initFrom) {
    initFrom = f.initFrom;
    const base = await loadLayersModelDir(f.initFrom);
    const t = buildTransferModel(base, spec, { seed });
    model = t.model;
    if (freezeEpochs > 0) {
      progress(`transfer from ${f.initFrom}: ${t.baseLayers.length} base layers frozen for ${freezeEpochs} epochs (new heads only)`);
      await fit({ model, spec }, trainingSet, { ...common, maxEpochs: freezeEpochs });
    }
    const open = setTrainableBaseLayers(t, unfreezeLayers);
    progress(`fine-tuning with ${open.length} base layers unfrozen at learning rate ${learningRate / 10}`);
    result = await fit({ model, spec }, trainingSet, { ...common, learningRate: learningRate / 10, maxEpochs });
  } else {
    model = await buildModelAsync(spec, seed, { dir: f.backbone });
    const initial = getWeights(model);
    result = await fit({ spec, initial }, trainingSet, { ...common, maxEpochs, pool: c.pool });
    if (f.refit !== false) {
      // The validation patients chose how long to train; the saved model learns from every patient.
      const all = await c.everyone();
      progress(`refit: ${result.bestEpoch} epochs (the best on validation) on all ${patients([...split.train, ...split.test])} patients (${all.count} rows)`);
      const allWeights = {
        classWeights: balancedClassWeights(all.labels, 2),
        ...(spec.subtypeParents && all.subtypes ? { subtypeWeights: balancedClassWeights(all.subtypes, spec.subtypeParents.length) } : {}),
      };
      const allSet = f.augment && spec.tiles === undefined ? (chunk: number) => augmentTrainingSet(all, seed * 7919 + chunk) : all;
      const refit = await fit({ spec, initial }, allSet, {
        batchSize,
        learningRate,
        proximalMu: 0,
        seed,
        maxEpochs: result.bestEpoch,
        pool: c.pool,
        ...allWeights,
        onEpoch: (e) => progress(`refit epoch ${e.epoch}/${e.maxEpochs} train loss ${e.trainLoss.toFixed(4)}`, e),
      });
      refitEpochs = refit.epochsRun;
      result = { ...result, weights: refit.weights };
    }
  }
  try {
    setWeights(model, result.weights);
    // A backbone model is saved as one tile classifier (the frozen backbone part, then the heads).
    const featureModel = spec.backbone ? (await tileFeatureExtractor(spec.backbone, spec.imageSize, { dir: f.backbone })).model : undefined;
    await saveModel(f.out, model, {
      classes: [...STAGE1_CLASSES],
      ...(spec.subtypeParents ? { subtypeClasses: [...BREAKHIS_SUBTYPE_CODES] } : {}),
      spec,
      ...(featureModel ? { featureModel } : {}),
      preprocessing: preprocessingFor(spec, c.stain),
      provenance: { kind: f.provenance as 'local' | 'centralized', ...(initFrom ? { initFrom } : {}) },
    });
    const d = describeModel(model);
    return {
      out: f.out,
      spec,
      backend: currentBackend()?.name ?? null,
      parameters: d.parameters,
      multiplyAdds: d.multiplyAdds,
      images: { train: split.train.length, validation: split.test.length },
      patients: { train: patients(split.train), validation: patients(split.test) },
      epochsRun: result.epochsRun,
      bestEpoch: result.bestEpoch,
      stoppedEarly: result.stoppedEarly,
      validation: result.validation ?? null,
      history: result.history,
      refitEpochs,
      initFrom,
      wallSeconds: (Date.now() - c.started) / 1000,
    };
  } finally {
    model.dispose();
  }
}
