/**
 * The federated methods of bench:domain, simulated in process on one fold's hospitals: the same
 * functions the sites and the coordinator run (trainLocal with FedProx and the alignment term,
 * featureMoments and combineFeatureMoments for the reference, weightedAverage / the FedBN
 * LocalTensorsStrategy, withLocalTensors for each site's own batch-norm tensors), without sockets.
 *
 * One round: every site trains `localEpochs` from the global model (FedBN: with its own local
 * tensors), then the coordinator aggregates (FedAvg by training images; FedBN: the shared tensors
 * only) and, with alignment, combines the sites' penultimate-feature moments into the next round's
 * reference (round 1 trains without a reference). The round kept is the one whose central model
 * has the lowest loss on the pooled validation patients (from `minRounds` on; stop after
 * `roundPatience` rounds without improvement). The central model is the global model, or with
 * FedBN the ensemble of global@site members (probabilities averaged), as the coordinator evaluates.
 */
import type * as tfl from '@tensorflow/tfjs-layers';
import { createStrategy, weightedAverage, withLocalTensorPolicy } from '@histofed/aggregation';
import { localTensorsOf, withLocalTensors, type LabeledImages, type ModelSpec, type NamedTensor } from '@histofed/fl-core';
import {
  balancedClassWeights,
  buildModel,
  combineFeatureMoments,
  dataRowShape,
  featureMoments,
  getWeights,
  mixSeed,
  outputMetrics,
  perImage,
  predictProbabilities,
  setWeights,
  trainLocal,
  type FeatureMoments,
  type OutputLayout,
} from '@histofed/ml';

/** One hospital in one fold: its training and validation patients and its own test patients. */
export interface SiteFold {
  readonly train: LabeledImages;
  /** Training images (not tile rows): the FedAvg weight. */
  readonly trainImages: number;
  readonly validation: LabeledImages | null;
  readonly test: LabeledImages | null;
}

export interface FoldData {
  readonly sites: readonly SiteFold[];
  /** Every site's validation patients (each with its own domain). */
  readonly validation: LabeledImages;
  /** Every site's test patients: the central test set. */
  readonly test: LabeledImages;
}

export type StainMethod = 'none' | 'target' | 'aug';

/** What a method changes; every method is FedAvg plus some of these. */
export interface MethodConfig {
  readonly proximalMu: number;
  readonly fedbn: boolean;
  readonly alignment: null | { readonly method: 'coral' | 'mmd'; readonly lambda: number };
  readonly stain: StainMethod;
}

export interface FedRecipe {
  readonly spec: ModelSpec;
  readonly batchSize: number;
  readonly learningRate: number;
  readonly rounds: number;
  readonly minRounds: number;
  readonly roundPatience: number;
  readonly localEpochs: number;
}

export interface Scores {
  readonly balancedAccuracy: number;
  readonly auc: number | null;
  readonly loss: number;
  readonly images: number;
}

export interface FedResult {
  readonly central: Scores;
  /** Each site's model (global, or global@site with FedBN) on the site's own test patients. */
  readonly perSite: (Scores | null)[];
  readonly validationLoss: number;
  /** Stage-1 balanced accuracy of the kept round's central model on the pooled validation patients (compares methods). */
  readonly validationBalancedAccuracy: number;
  readonly keptRound: number;
  readonly roundsRun: number;
  /** The kept global model (FedBN: its local tensors are the initial ones). */
  readonly global: NamedTensor[];
  /** The model each site uses (global, or global@site); null for a site that did not train. */
  readonly siteModels: (NamedTensor[] | null)[];
}

export function layoutOf(spec: ModelSpec): OutputLayout {
  return { numClasses: spec.numClasses, subtypeParents: spec.subtypeParents };
}

/** Per-image output rows of `weights` on `data` (tile rows averaged per image). */
export function imageProbabilities(model: tfl.LayersModel, weights: readonly NamedTensor[], data: LabeledImages, layout: OutputLayout): Float32Array {
  setWeights(model, weights);
  const rows = predictProbabilities(model, data.images, data.count, dataRowShape(data));
  return perImage(data, rows, layout).probabilities;
}

/** Stage-1 scores of the ensemble of `members` (probabilities averaged; one member = the model itself). */
export function ensembleScores(model: tfl.LayersModel, members: readonly (readonly NamedTensor[])[], data: LabeledImages, layout: OutputLayout): Scores {
  let sum: Float32Array | null = null;
  for (const m of members) {
    const p = imageProbabilities(model, m, data, layout);
    if (!sum) sum = Float32Array.from(p);
    else for (let i = 0; i < p.length; i++) sum[i] += p[i];
  }
  if (!sum) throw new Error('ensembleScores: no member');
  for (let i = 0; i < sum.length; i++) sum[i] /= members.length;
  const { metrics } = outputMetrics(data, sum, layout);
  const auc = metrics['auc'];
  return {
    balancedAccuracy: metrics['balancedAccuracy'],
    auc: auc === undefined || !Number.isFinite(auc) ? null : auc,
    loss: metrics['loss'],
    images: perImage(data, sum, layout).data.count,
  };
}

export function classWeightsOf(data: LabeledImages, spec: ModelSpec): { classWeights: number[]; subtypeWeights?: number[] } {
  const subtypes = spec.subtypeParents?.length ?? 0;
  return {
    classWeights: balancedClassWeights(data.labels, spec.numClasses),
    ...(subtypes > 0 && data.subtypes ? { subtypeWeights: balancedClassWeights(data.subtypes, subtypes) } : {}),
  };
}

const FEDBN = 'batch-norm' as const;

export interface FederateContext {
  readonly recipe: FedRecipe;
  readonly initial: readonly NamedTensor[];
  /** A main-thread model of recipe.spec for evaluation. */
  readonly evalModel: tfl.LayersModel;
  readonly seed: number;
  readonly log: (line: string) => void;
  readonly tag: string;
}

/** One federated run of `method` on `fold` (see the module comment). */
export async function federate(ctx: FederateContext, fold: FoldData, method: MethodConfig): Promise<FedResult> {
  const { recipe } = ctx;
  const layout = layoutOf(recipe.spec);
  const participants = fold.sites.map((s, i) => ({ s, i })).filter(({ s }) => s.train.count > 0);
  if (participants.length === 0) throw new Error(`${ctx.tag}: no site has training images`);
  const models = participants.map(() => buildModel(recipe.spec, 1));
  const weightsOf = participants.map(({ s }) => classWeightsOf(s.train, recipe.spec));
  const strategy = withLocalTensorPolicy(createStrategy('fedavg'), method.fedbn ? FEDBN : 'none');
  let global: NamedTensor[] = [...ctx.initial];
  const locals: (NamedTensor[] | null)[] = fold.sites.map(() => null);
  let reference: FeatureMoments | null = null;
  const membersOf = (g: NamedTensor[], own: readonly (NamedTensor[] | null)[]): (NamedTensor[] | null)[] =>
    fold.sites.map((_, i) => (method.fedbn ? (own[i] ? withLocalTensors(g, own[i] as NamedTensor[]) : null) : g));
  let best: { global: NamedTensor[]; locals: (NamedTensor[] | null)[]; round: number; loss: number; balancedAccuracy: number } | null = null;
  let since = 0;
  let round = 0;
  try {
    while (round < recipe.rounds) {
      round++;
      const updates: NamedTensor[][] = [];
      const moments: FeatureMoments[] = [];
      const losses: string[] = [];
      for (let k = 0; k < participants.length; k++) {
        const { s, i } = participants[k];
        const start = method.fedbn && locals[i] ? withLocalTensors(global, locals[i] as NamedTensor[]) : global;
        setWeights(models[k], start);
        const r = await trainLocal(models[k], s.train, {
          epochs: recipe.localEpochs,
          batchSize: recipe.batchSize,
          learningRate: recipe.learningRate,
          proximalMu: method.proximalMu,
          globalWeights: start,
          seed: mixSeed(mixSeed(ctx.seed, 400 + i), round),
          ...weightsOf[k],
          ...(method.alignment && reference ? { alignment: { method: method.alignment.method, lambda: method.alignment.lambda, reference } } : {}),
        });
        const w = getWeights(models[k]);
        if (method.fedbn) locals[i] = localTensorsOf(w, FEDBN);
        if (method.alignment) moments.push(await featureMoments(models[k], s.train));
        updates.push(w);
        losses.push(r.loss.toFixed(3) + (r.alignment !== undefined ? `/${r.alignment.toFixed(3)}` : ''));
      }
      const counts = participants.map(({ s }) => s.trainImages);
      global = method.fedbn
        ? [...strategy.aggregate(
            global,
            updates.map((w, k) => ({ siteId: `site-${participants[k].i + 1}`, numSamples: counts[k], weights: w, metrics: {} })),
          ).weights]
        : weightedAverage(updates, counts);
      reference = method.alignment ? combineFeatureMoments(moments) : null;
      const members = membersOf(global, locals).filter((m): m is NamedTensor[] => m !== null);
      const validation = ensembleScores(ctx.evalModel, members, fold.validation, layout);
      const loss = validation.loss;
      const isBest = round >= recipe.minRounds && (best === null || loss < best.loss - 1e-9);
      if (isBest) best = { global, locals: [...locals], round, loss, balancedAccuracy: validation.balancedAccuracy };
      since = isBest ? 0 : since + 1;
      ctx.log(`      ${ctx.tag} round ${round}: site losses ${losses.join(' ')}, validation loss ${loss.toFixed(3)} balanced accuracy ${validation.balancedAccuracy.toFixed(3)}${isBest ? ' *' : ''}`);
      if (round >= recipe.minRounds && since >= recipe.roundPatience) break;
    }
  } finally {
    for (const m of models) m.dispose();
  }
  const kept = best as NonNullable<typeof best>;
  const siteModels = membersOf(kept.global, kept.locals);
  const central = ensembleScores(
    ctx.evalModel,
    siteModels.filter((m): m is NamedTensor[] => m !== null),
    fold.test,
    layout,
  );
  const perSite = fold.sites.map((s, i) => {
    const m = siteModels[i];
    return s.test && m ? ensembleScores(ctx.evalModel, [m], s.test, layout) : null;
  });
  return { central, perSite, validationLoss: kept.loss, validationBalancedAccuracy: kept.balancedAccuracy, keptRound: kept.round, roundsRun: round, global: kept.global, siteModels };
}

/**
 * Personalization (what the coordinator's personalize task does): each site trains `epochs` more
 * from the model it uses (with FedBN: the global model with its own local tensors), without the
 * proximal term. Returns the personalized weights per site (null for a site without one).
 */
export async function personalize(
  ctx: FederateContext,
  fold: FoldData,
  siteModels: readonly (NamedTensor[] | null)[],
  epochs: number,
  learningRate: number,
): Promise<(NamedTensor[] | null)[]> {
  const out: (NamedTensor[] | null)[] = [];
  const model = buildModel(ctx.recipe.spec, 1);
  try {
    for (let i = 0; i < fold.sites.length; i++) {
      const s = fold.sites[i];
      const start = siteModels[i];
      if (!start || s.train.count === 0) {
        out.push(null);
        continue;
      }
      setWeights(model, start);
      await trainLocal(model, s.train, {
        epochs,
        batchSize: ctx.recipe.batchSize,
        learningRate,
        proximalMu: 0,
        seed: mixSeed(ctx.seed, 700 + i),
        ...classWeightsOf(s.train, ctx.recipe.spec),
      });
      out.push(getWeights(model));
    }
  } finally {
    model.dispose();
  }
  return out;
}
