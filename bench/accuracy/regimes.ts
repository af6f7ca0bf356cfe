/**
 * The three training regimes of the accuracy benchmark, on one fold's data:
 *
 * - centralized: every site's training patients pooled, `fit` with early stopping on the pooled
 *   validation patients;
 * - federated: an in-process simulation of the federation's math (the real socket.io federation is
 *   tested elsewhere): R rounds in which every site trains E local epochs from the global weights
 *   with the FedProx term, then FedAvg weighted by the sites' sample counts (`weightedAverage` of
 *   @histofed/aggregation). The kept global model is that of the round with the best monitored value
 *   on the pooled validation patients (what the coordinator gets from the sites' validation
 *   reports), stopping after `roundPatience` rounds without improvement;
 * - local-only: each site alone, `fit` with early stopping on its own validation patients.
 *
 * All regimes start from the same initial weights, train on the same images (the sites' training
 * patients) with the same recipe, and select on the same validation patients.
 */
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages, ModelSpec, NamedTensor, WeightSet } from '@histofed/fl-core';
import { weightedAverage } from '@histofed/aggregation';
import type { AugmentOptions } from '@histofed/data';
import {
  balancedClassWeights,
  evaluateModel,
  evaluateModelAsync,
  buildModel,
  fit,
  getWeights,
  isFrozenBackbone,
  trainLocal,
  type TrainOptions,
  mixSeed,
  setWeights,
  type FitMonitor,
  type TrainingPool,
} from '@histofed/ml';
import { augmentedCopies, concatRows } from './data-slices';

export interface Recipe {
  readonly spec: ModelSpec;
  readonly batchSize: number;
  readonly learningRate: number;
  /** Early-stopped regimes: epoch budget, patience (in checks) and what 'best' means. */
  readonly maxEpochs: number;
  readonly patience: number;
  /** Epochs before early stopping may stop or keep weights (fit's minEpochs). */
  readonly minEpochs: number;
  readonly monitor: FitMonitor;
  /** Federated: rounds, local epochs per round, patience in rounds, FedProx mu. */
  readonly rounds: number;
  readonly localEpochs: number;
  readonly roundPatience: number;
  /** Rounds before the federated regime may stop or keep a round's model (as minEpochs). */
  readonly minRounds: number;
  readonly proximalMu: number;
  /**
   * After early stopping, train again from the same start on the training and validation patients
   * for the selected number of epochs (what `histofed-site train` saves), and test that.
   */
  readonly refit: boolean;
  /** Versions of each training image (1 = no augmentation), see augmentedCopies. */
  readonly augmentCopies: number;
  readonly augment: AugmentOptions;
}

/** The test metrics the benchmark reports. */
export interface TestMetrics {
  readonly patientAccuracy: number;
  readonly patientDiagnosisAccuracy: number;
  readonly balancedAccuracy: number;
  readonly auc: number | null;
  readonly stage2MacroF1: number;
  readonly imageAccuracy: number;
}

export interface RegimeResult {
  readonly test: TestMetrics;
  /** The monitored validation value of the kept weights (the only thing model selection saw). */
  readonly validation: number;
  /** Epochs (centralized, local: mean over sites) or rounds (federated) actually run / of the kept weights. */
  readonly trained: number;
  readonly kept: number;
  /** The tested weights (early-stopped regimes; federated: the kept round's global model), for benchmarks that evaluate them elsewhere too. */
  readonly weights?: NamedTensor[];
  /** Federated: the global model after each round run (index round - 1), e.g. for snapshot ensembles (ensemble.ts). */
  readonly rounds?: readonly NamedTensor[][];
}

export interface SiteData {
  readonly train: LabeledImages;
  readonly validation: LabeledImages;
  /** The validation patients as training data (tiles: with their views), for the refit. */
  readonly validationTrain: LabeledImages;
}

export interface FoldContext {
  readonly fold: number;
  readonly seed: number;
  readonly recipe: Recipe;
  readonly pool: TrainingPool;
  /** Initial weights, the same for every regime of the fold. */
  readonly initial: NamedTensor[];
  /** A main-thread model of recipe.spec for evaluation. */
  readonly evalModel: tfl.LayersModel;
  readonly sites: readonly SiteData[];
  /** The sites' training and validation images pooled (centralized). */
  readonly pooled: SiteData;
  readonly test: LabeledImages;
  readonly log: (line: string) => void;
}

function testMetrics(model: tfl.LayersModel, weights: WeightSet, test: LabeledImages, spec: ModelSpec): TestMetrics {
  setWeights(model, weights);
  const { report } = evaluateModel(model, test, { subtypeParents: spec.subtypeParents });
  const s1 = report.stage1;
  return {
    patientAccuracy: s1.patientAccuracy ?? NaN,
    patientDiagnosisAccuracy: s1.patientDiagnosisAccuracy ?? NaN,
    balancedAccuracy: s1.balancedAccuracy,
    auc: s1.auc,
    stage2MacroF1: report.stage2?.macroF1 ?? NaN,
    imageAccuracy: s1.imageAccuracy,
  };
}

export function trainingWeights(data: LabeledImages, spec: ModelSpec, rowWeights?: Float32Array): { classWeights: number[]; subtypeWeights?: number[] } {
  // With row weights (e.g. patientRowWeights), the classes are balanced by their rows' summed weights.
  const subtypes = spec.subtypeParents?.length ?? 0;
  return {
    classWeights: balancedClassWeights(data.labels, spec.numClasses, undefined, rowWeights),
    subtypeWeights: subtypes > 0 && data.subtypes ? balancedClassWeights(data.subtypes, subtypes, undefined, rowWeights) : undefined,
  };
}

const fmt = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(3));

/** `fit` with early stopping on one training / validation pair (centralized and each local-only site). */
async function earlyStopped(ctx: FoldContext, data: SiteData, seed: number, tag: string): Promise<RegimeResult> {
  const { recipe } = ctx;
  const train = augmentedCopies(data.train, recipe.augmentCopies, seed, recipe.augment);
  const r = await fit({ spec: recipe.spec, initial: ctx.initial }, train, {
    maxEpochs: recipe.maxEpochs,
    patience: recipe.patience,
    minEpochs: recipe.minEpochs,
    monitor: recipe.monitor,
    validation: data.validation,
    // Heads on frozen features are tiny: they train in this thread (the pool's messages would cost more).
    pool: isFrozenBackbone(recipe.spec) ? undefined : ctx.pool,
    batchSize: recipe.batchSize,
    learningRate: recipe.learningRate,
    proximalMu: 0,
    seed,
    ...trainingWeights(data.train, recipe.spec),
    onEpoch: (e) =>
      ctx.log(
        `    ${tag} epoch ${e.epoch}/${e.maxEpochs}: train loss ${e.trainLoss.toFixed(3)}, val loss ${fmt(e.validation?.['loss'])}, ` +
          `val patient acc ${fmt(e.validation?.['patientAccuracy'])}${e.best ? ' *' : ''}`,
      ),
  });
  let weights = r.weights;
  if (recipe.refit) {
    const all = concatRows(data.train, data.validationTrain);
    const refit = await fit({ spec: recipe.spec, initial: ctx.initial }, augmentedCopies(all, recipe.augmentCopies, seed, recipe.augment), {
      maxEpochs: r.bestEpoch,
      pool: isFrozenBackbone(recipe.spec) ? undefined : ctx.pool,
      batchSize: recipe.batchSize,
      learningRate: recipe.learningRate,
      proximalMu: 0,
      seed,
      ...trainingWeights(all, recipe.spec),
    });
    weights = refit.weights;
  }
  return {
    test: testMetrics(ctx.evalModel, weights, ctx.test, recipe.spec),
    validation: r.validation?.[recipe.monitor] ?? NaN,
    trained: r.epochsRun,
    kept: r.bestEpoch,
    weights,
  };
}

export function centralized(ctx: FoldContext): Promise<RegimeResult> {
  return earlyStopped(ctx, ctx.pooled, mixSeed(ctx.seed, 101), 'centralized');
}

/** Each site alone; the result is the mean over the sites (validation: mean of the sites' own values). */
export async function localOnly(ctx: FoldContext): Promise<{ mean: RegimeResult; perSite: RegimeResult[] }> {
  const perSite: RegimeResult[] = [];
  for (let s = 0; s < ctx.sites.length; s++) {
    perSite.push(await earlyStopped(ctx, ctx.sites[s], mixSeed(ctx.seed, 201 + s), `local site ${s + 1}`));
  }
  const mean = (f: (r: RegimeResult) => number | null): number => {
    const xs = perSite.map(f).filter((x): x is number => x !== null && !Number.isNaN(x));
    return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
  };
  const auc = mean((r) => r.test.auc);
  return {
    perSite,
    mean: {
      test: {
        patientAccuracy: mean((r) => r.test.patientAccuracy),
        patientDiagnosisAccuracy: mean((r) => r.test.patientDiagnosisAccuracy),
        balancedAccuracy: mean((r) => r.test.balancedAccuracy),
        auc: Number.isNaN(auc) ? null : auc,
        stage2MacroF1: mean((r) => r.test.stage2MacroF1),
        imageAccuracy: mean((r) => r.test.imageAccuracy),
      },
      validation: mean((r) => r.validation),
      trained: mean((r) => r.trained),
      kept: mean((r) => r.kept),
    },
  };
}

/** One site's local training from `initial`: heads on frozen features in this thread, anything else on the pool. */
export async function trainFrom(ctx: FoldContext, initial: WeightSet, data: LabeledImages, opts: TrainOptions): Promise<{ weights: NamedTensor[]; loss: number }> {
  if (!isFrozenBackbone(ctx.recipe.spec)) return ctx.pool.train(ctx.recipe.spec, initial, data, opts);
  const model = buildModel(ctx.recipe.spec, 1);
  try {
    setWeights(model, initial);
    const r = await trainLocal(model, data, opts);
    return { weights: getWeights(model), loss: r.loss };
  } finally {
    model.dispose();
  }
}

const better = (monitor: FitMonitor, a: number, b: number) => (monitor === 'loss' ? a < b - 1e-9 : a > b + 1e-9);

/** A site's training set in the federated regime (augmented copies as the recipe says) and its balanced loss weights. */
export interface FederatedSite {
  readonly train: LabeledImages;
  readonly weights: { classWeights: number[]; subtypeWeights?: number[] };
}

export function federatedSites(ctx: FoldContext): FederatedSite[] {
  const { recipe } = ctx;
  return ctx.sites.map((s, i) => ({
    train: augmentedCopies(s.train, recipe.augmentCopies, mixSeed(ctx.seed, 301 + i), recipe.augment),
    weights: trainingWeights(s.train, recipe.spec),
  }));
}

/**
 * One federated round from `global`: every site trains recipe.localEpochs local epochs (FedProx
 * anchored at `global`, shuffle seed `seedOf(site)`, with `sampleWeights[site]` per training row
 * when given), then FedAvg weighted by the sites' numbers of (original) training images.
 */
export async function federatedRound(
  ctx: FoldContext,
  sites: readonly FederatedSite[],
  global: NamedTensor[],
  seedOf: (site: number) => number,
  sampleWeights?: readonly (Float32Array | undefined)[],
): Promise<{ global: NamedTensor[]; losses: number[] }> {
  const { recipe } = ctx;
  const updates: NamedTensor[][] = [];
  const counts: number[] = [];
  const losses: number[] = [];
  for (let s = 0; s < sites.length; s++) {
    const rowWeights = sampleWeights?.[s];
    const r = await trainFrom(ctx, global, sites[s].train, {
      epochs: recipe.localEpochs,
      batchSize: recipe.batchSize,
      learningRate: recipe.learningRate,
      proximalMu: recipe.proximalMu,
      globalWeights: global,
      seed: seedOf(s),
      ...sites[s].weights,
      ...(rowWeights ? { sampleWeights: rowWeights } : {}),
    });
    updates.push(r.weights);
    // FedAvg weighs each update by the site's number of (original) training images.
    counts.push(ctx.sites[s].train.count);
    losses.push(r.loss);
  }
  return { global: weightedAverage(updates, counts), losses };
}

export async function federated(ctx: FoldContext): Promise<RegimeResult> {
  const { recipe } = ctx;
  const sites = federatedSites(ctx);
  let global: NamedTensor[] = ctx.initial;
  let best: { weights: NamedTensor[]; round: number; value: number } | null = null;
  const rounds: NamedTensor[][] = [];
  let since = 0;
  let round = 0;
  while (round < recipe.rounds) {
    round++;
    const r = await federatedRound(ctx, sites, global, (s) => mixSeed(mixSeed(ctx.seed, 400 + s), round));
    global = r.global;
    rounds.push(global);
    const losses = r.losses.map((l) => l.toFixed(3));
    setWeights(ctx.evalModel, global);
    const val = (await evaluateModelAsync(ctx.evalModel, ctx.pooled.validation, { subtypeParents: recipe.spec.subtypeParents })).metrics;
    const value = val[recipe.monitor];
    const isBest = round >= recipe.minRounds && (best === null || better(recipe.monitor, value, best.value));
    if (isBest) best = { weights: global, round, value };
    since = isBest ? 0 : since + 1;
    ctx.log(
      `    federated round ${round}/${recipe.rounds}: site losses ${losses.join(' ')}, val loss ${fmt(val['loss'])}, ` +
        `val patient acc ${fmt(val['patientAccuracy'])}${isBest ? ' *' : ''}`,
    );
    if (round >= recipe.minRounds && since >= recipe.roundPatience) break;
  }
  const kept = best as NonNullable<typeof best>;
  return {
    test: testMetrics(ctx.evalModel, kept.weights, ctx.test, recipe.spec),
    validation: kept.value,
    trained: round,
    kept: kept.round,
    weights: kept.weights,
    rounds,
  };
}
