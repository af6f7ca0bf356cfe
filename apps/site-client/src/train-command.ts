/**
 * `histofed-site train --data DIR --out MODEL_DIR`: trains a model on one BreakHis folder — a
 * hospital's local-only model, or the centralized baseline when the folder holds everyone's data —
 * with early stopping on a patient-wise validation split, and saves it as a HistoFed model
 * directory (`histofed-coordinator evaluate` reads it).
 */
import { BREAKHIS_SUBTYPE_CODES, BREAKHIS_SUBTYPE_PARENTS, STAGE1_CLASSES, ValidationError, type ModelSpec } from '@histofed/fl-core';
import { ImageCache, assertHasImages, loadLabeledImages, patientWiseSplit, readBreakHisTree } from '@histofed/data';
import {
  MODEL_KINDS,
  balancedClassWeights,
  buildModel,
  buildTransferModel,
  createTrainingPool,
  currentBackend,
  describeModel,
  fit,
  getWeights,
  loadLayersModelDir,
  saveModel,
  setTrainableBaseLayers,
  setWeights,
  shareImages,
  type FitEpoch,
  type FitResult,
  type TrainingPool,
} from '@histofed/ml';
import { augmentTrainingSet } from './augment-training-set';

export interface TrainFlags {
  data: string;
  out: string;
  epochs: string;
  imageSize: string;
  model: string;
  singleStage?: boolean;
  initFrom?: string;
  freezeEpochs: string;
  unfreezeLayers: string;
  validationFraction: string;
  patience: string;
  batchSize: string;
  learningRate: string;
  seed: string;
  augment?: boolean;
  trainWorkers: string;
  cacheDir?: string;
  cache: boolean;
  provenance: string;
  json?: boolean;
}

function num(flag: string, text: string, check: (n: number) => boolean, expected: string): number {
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
  readonly validation: Record<string, number> | null;
  readonly history: readonly FitEpoch[];
  readonly initFrom: string | null;
  readonly wallSeconds: number;
}

export async function trainCommand(f: TrainFlags, progress: (line: string, e?: FitEpoch) => void): Promise<TrainSummary> {
  const started = Date.now();
  const maxEpochs = num('--epochs', f.epochs, (n) => Number.isInteger(n) && n >= 1, 'an integer >= 1');
  const imageSize = num('--image-size', f.imageSize, (n) => Number.isInteger(n) && n >= 16 && n <= 512, 'an integer in [16, 512]');
  const validationFraction = num('--validation-fraction', f.validationFraction, (n) => n > 0 && n < 1, 'a number in (0, 1)');
  const patience = num('--patience', f.patience, (n) => Number.isInteger(n) && n >= 1, 'an integer >= 1');
  const batchSize = num('--batch-size', f.batchSize, (n) => Number.isInteger(n) && n >= 1, 'an integer >= 1');
  const learningRate = num('--learning-rate', f.learningRate, (n) => n > 0 && n <= 1, 'a number in (0, 1]');
  const seed = num('--seed', f.seed, Number.isInteger, 'an integer');
  const freezeEpochs = num('--freeze-epochs', f.freezeEpochs, (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0');
  const unfreezeLayers = f.unfreezeLayers === 'all' ? Infinity : num('--unfreeze-layers', f.unfreezeLayers, (n) => Number.isInteger(n) && n >= 0, "an integer >= 0 or 'all'");
  if (!(MODEL_KINDS as readonly string[]).includes(f.model)) throw new ValidationError(`--model: expected one of ${MODEL_KINDS.join(', ')}, got "${f.model}"`);
  if (!['local', 'centralized'].includes(f.provenance)) throw new ValidationError(`--provenance: expected local or centralized, got "${f.provenance}"`);
  const spec: ModelSpec = {
    kind: f.model,
    imageSize,
    numClasses: 2,
    ...(f.singleStage ? {} : { subtypeParents: [...BREAKHIS_SUBTYPE_PARENTS] }),
  };

  const dataset = assertHasImages(await readBreakHisTree(f.data));
  const split = patientWiseSplit(dataset.images, { testFraction: validationFraction, seed });
  if (split.test.length === 0) throw new ValidationError(`--data ${f.data}: too few patients for a validation split`);
  const cache = f.cache ? new ImageCache({ dir: f.cacheDir ?? `${process.env['HOME'] ?? '.'}/.cache/histofed` }) : undefined;
  const train = shareImages(await loadLabeledImages(split.train, imageSize, { cache }));
  const validation = await loadLabeledImages(split.test, imageSize, { cache });
  const patients = (xs: readonly { patientId: string }[]) => new Set(xs.map((i) => i.patientId)).size;
  progress(
    `training ${spec.kind}${spec.subtypeParents ? ' two-stage' : ''} at ${imageSize}px on ${train.count} images of ${patients(split.train)} patients; ` +
      `validation ${validation.count} images of ${patients(split.test)} patients (patient-wise)`,
  );
  const weights = {
    classWeights: balancedClassWeights(train.labels, 2),
    ...(spec.subtypeParents && train.subtypes ? { subtypeWeights: balancedClassWeights(train.subtypes, spec.subtypeParents.length) } : {}),
  };
  const trainingSet = f.augment ? (chunk: number) => augmentTrainingSet(train, seed * 7919 + chunk) : train;
  const onEpoch = (e: FitEpoch) =>
    progress(
      `epoch ${e.epoch}/${e.maxEpochs} train loss ${e.trainLoss.toFixed(4)}` +
        (e.validation
          ? ` validation loss ${e.validation['loss'].toFixed(4)} accuracy ${e.validation['accuracy'].toFixed(3)} patient ${(e.validation['patientAccuracy'] ?? NaN).toFixed(3)}`
          : '') +
        (e.best ? ' (best so far)' : ''),
      e,
    );
  const common = { batchSize, learningRate, proximalMu: 0, seed, patience, validation, onEpoch, ...weights };

  let result: FitResult;
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
    const workers = f.trainWorkers === 'auto' ? undefined : num('--train-workers', f.trainWorkers, (n) => Number.isInteger(n) && n >= 1, "'auto' or an integer >= 1");
    model = buildModel(spec, seed);
    let pool: TrainingPool | undefined;
    try {
      pool = workers === 1 ? undefined : await createTrainingPool({ workers });
      result = await fit({ spec, initial: getWeights(model) }, trainingSet, { ...common, maxEpochs, pool });
    } finally {
      await pool?.close();
    }
  }
  try {
    setWeights(model, result.weights);
    await saveModel(f.out, model, {
      classes: [...STAGE1_CLASSES],
      ...(spec.subtypeParents ? { subtypeClasses: [...BREAKHIS_SUBTYPE_CODES] } : {}),
      spec,
      provenance: { kind: f.provenance as 'local' | 'centralized', ...(initFrom ? { initFrom } : {}) },
    });
    const d = describeModel(model);
    return {
      out: f.out,
      spec,
      backend: currentBackend()?.name ?? null,
      parameters: d.parameters,
      multiplyAdds: d.multiplyAdds,
      images: { train: train.count, validation: validation.count },
      patients: { train: patients(split.train), validation: patients(split.test) },
      epochsRun: result.epochsRun,
      bestEpoch: result.bestEpoch,
      stoppedEarly: result.stoppedEarly,
      validation: result.validation ?? null,
      history: result.history,
      initFrom,
      wallSeconds: (Date.now() - started) / 1000,
    };
  } finally {
    model.dispose();
  }
}
