/**
 * The ensemble part of bench:accuracy's federated regime (issue 16): after the federated regime of a
 * fold, the members a run can end with, and every combiner, scored on the same test fold.
 *
 * Members (mirroring apps/coordinator's run finish):
 * - `global`: the kept federated model (the regime's own model);
 * - `snapshot-k` (k = 1..--snapshots): the global model k rounds before the kept one — the product's
 *   snapshot members 'global-r<round>' (ensemble.snapshots), named by distance here so folds line up;
 * - `site-i`: site i's personalized copy: the kept global fine-tuned on the site's own training data
 *   for --personalize-epochs epochs at lr / 10 with the run's FedProx term (run option personalizeEpochs);
 * - `boost-b` (b = 1..--boost-members): federated boosting. Each site weighs its own training images by
 *   boostingImageWeights (libs/ml ensemble-boosting.ts: SAMME-style reweighting on the soft errors
 *   of the current boosted ensemble, the mean of global, boost-1..boost-(b-1), on that site's training
 *   images); member b is trained from the kept global with --boost-rounds rounds of the regime's own
 *   simulation (local epochs, FedProx, FedAvg by counts) on the reweighted rows. Sites need nothing but
 *   the models they hold, so boosting works under secure aggregation.
 *
 * Combiners (combineMembers of libs/ml on image-level output rows):
 * - `mean`: the unweighted mean of all members (the product's default combiner);
 * - `mean-shared`: the mean of global + snapshots (what a secure-aggregation run can hold);
 * - `weighted`: the weighted mean fitted like the coordinator's federated fit (weightingCandidates +
 *   weightedMeanNll + chooseWeighting over the shared members, on the pooled validation patients,
 *   whose sums equal the sites' summed reports), unshared members keeping 1/M (spreadFittedWeights);
 *   unlike the product, the members' probabilities are not temperature-calibrated first;
 * - `stacking`: fitStacking (both heads) on the pooled validation rows of the shared members;
 * - `boosting`: the weighted mean over global + boost members, fitted the same way.
 * Scores: test stage-1 balanced accuracy (as the rest of the bench) and ECE, from outputMetrics.
 */
import type { LabeledImages, NamedTensor } from '@histofed/fl-core';
import {
  boostingImageWeights,
  chooseWeighting,
  combineMembers,
  dataRowShape,
  fitStacking,
  imageLevel,
  mixSeed,
  outputMetrics,
  perImage,
  predictProbabilitiesAsync,
  rowWeightsFromImages,
  setWeights,
  weightedMeanNll,
  spreadFittedWeights,
  weightingCandidates,
  type EnsembleCombiner,
  type OutputLayout,
} from '@histofed/ml';
import { federatedRound, federatedSites, trainFrom, type FederatedSite, type FoldContext, type RegimeResult } from './regimes';
import { type EnsembleScore, type FoldEnsembleScores } from './ensemble-summary';

export interface EnsembleOptions {
  /** Snapshot members: global models of the rounds before the kept one. */
  readonly snapshots: number;
  /** Personalization epochs per site (0: no site members). */
  readonly personalizeEpochs: number;
  readonly boostMembers: number;
  readonly boostRounds: number;
  /** boostingImageWeights strength (default 2). */
  readonly boostStrength?: number;
}

export const COMBINERS = ['mean', 'mean-shared', 'weighted', 'stacking', 'boosting'] as const;
export const DEFAULT_COMBINER = 'mean';

interface Member {
  readonly id: string;
  readonly weights: NamedTensor[];
  /** Every site holds it (global, snapshots, boosted members): it can be scored by every site. */
  readonly shared: boolean;
}

export interface FoldEnsemble extends FoldEnsembleScores {
  /** For the log: the round of each snapshot, the fitted weights, the boosting weights' spread. */
  readonly notes: string[];
}

/** Image-level output rows of `weights` on `data` (tile rows averaged per image). */
async function imageRows(ctx: FoldContext, weights: NamedTensor[], data: LabeledImages, layout: OutputLayout): Promise<Float32Array> {
  setWeights(ctx.evalModel, weights);
  const rows = await predictProbabilitiesAsync(ctx.evalModel, data.images, data.count, dataRowShape(data));
  return perImage(data, rows, layout).probabilities;
}

function score(data: LabeledImages, rows: Float32Array, layout: OutputLayout): EnsembleScore {
  const { metrics, report } = outputMetrics(data, rows, layout);
  return { balancedAccuracy: report.stage1.balancedAccuracy, ece: metrics['ece'] };
}

/** The weighted mean over `members` fitted on the validation rows of the shared ones (the coordinator's fit); null with fewer than two shared members. */
function fittedWeighting(
  members: readonly Member[],
  validation: ReadonlyMap<string, Float32Array>,
  labels: ArrayLike<number>,
  layout: OutputLayout,
): { combiner: EnsembleCombiner; weights: number[] } | null {
  const shared = members.filter((m) => m.shared);
  if (shared.length < 2) return null;
  const candidates = weightingCandidates(shared.length);
  const { nll } = weightedMeanNll(shared.map((m) => validation.get(m.id) as Float32Array), labels, layout, candidates);
  const chosen = chooseWeighting(candidates, nll);
  const weights = spreadFittedWeights(members.map((m) => m.id), shared.map((m) => m.id), chosen.weights);
  return { combiner: { kind: 'weighted-mean', weights }, weights };
}

/** Row -> image of a site's training set (augmented copies of whole images repeat the images in order). */
function rowImages(train: LabeledImages, images: number): Pick<LabeledImages, 'count' | 'imageOf'> {
  if (train.imageOf !== undefined) return train;
  return { count: train.count, imageOf: Int32Array.from({ length: train.count }, (_, r) => r % images) };
}

const f3 = (x: number) => x.toFixed(3);

/** Builds the members after the fold's federated regime `fed` and scores members and combiners on the test fold. */
export async function foldEnsemble(ctx: FoldContext, fed: RegimeResult, o: EnsembleOptions): Promise<FoldEnsemble> {
  const { recipe } = ctx;
  if (!fed.weights || !fed.rounds) throw new Error('ensemble: the federated regime returned no weights / round models');
  const layout: OutputLayout = { numClasses: recipe.spec.numClasses, subtypeParents: recipe.spec.subtypeParents };
  const notes: string[] = [];
  const kept = fed.weights;
  const members: Member[] = [{ id: 'global', weights: kept, shared: true }];
  for (let k = 1; k <= o.snapshots; k++) {
    const round = fed.kept - k;
    if (round < 1) break;
    members.push({ id: `snapshot-${k}`, weights: fed.rounds[round - 1], shared: true });
  }
  if (o.snapshots > 0) notes.push(`snapshots of rounds ${members.filter((m) => m.id.startsWith('snapshot')).map((m) => fed.kept - Number(m.id.slice(9))).join(', ') || 'none'} (kept round ${fed.kept})`);

  const sites: FederatedSite[] = federatedSites(ctx);
  for (let s = 0; s < sites.length && o.personalizeEpochs > 0; s++) {
    const r = await trainFrom(ctx, kept, sites[s].train, {
      epochs: o.personalizeEpochs,
      batchSize: recipe.batchSize,
      learningRate: recipe.learningRate / 10,
      proximalMu: recipe.proximalMu,
      globalWeights: kept,
      seed: mixSeed(mixSeed(ctx.seed, 600 + s), 1),
      ...sites[s].weights,
    });
    members.push({ id: `site-${s + 1}`, weights: r.weights, shared: false });
  }

  // Boosting: each site's image-level outputs of the boosted ensemble's members on its own training images.
  // (One model at a time: the evaluation model is shared, so no concurrent predictions.)
  const trainImages = ctx.sites.map((s) => imageLevel(s.train));
  const onTrain = new Map<string, Float32Array[]>();
  const trainRows = async (m: Member) => {
    const cached = onTrain.get(m.id);
    if (cached) return cached;
    const rows: Float32Array[] = [];
    for (const s of ctx.sites) rows.push(await imageRows(ctx, m.weights, s.train, layout));
    onTrain.set(m.id, rows);
    return rows;
  };
  const boosted: Member[] = [members[0]];
  for (let b = 1; b <= o.boostMembers; b++) {
    const current: Float32Array[][] = [];
    for (const m of boosted) current.push(await trainRows(m));
    const sampleWeights = ctx.sites.map((_, s) => {
      const ensemble = combineMembers(current.map((rows) => rows[s]), layout);
      const w = boostingImageWeights(ensemble, trainImages[s].labels, layout.numClasses, {
        width: layout.numClasses + (layout.subtypeParents?.length ?? 0),
        ...(o.boostStrength !== undefined ? { strength: o.boostStrength } : {}),
      });
      return { image: w, rows: rowWeightsFromImages(w, rowImages(sites[s].train, trainImages[s].count)) };
    });
    notes.push(`boost-${b} image weights per site (min / max): ${sampleWeights.map(({ image }) => `${f3(Math.min(...image))} / ${f3(Math.max(...image))}`).join(', ')}`);
    let global = kept;
    for (let round = 1; round <= o.boostRounds; round++) {
      const r = await federatedRound(ctx, sites, global, (s) => mixSeed(mixSeed(ctx.seed, 700 + 10 * b + s), round), sampleWeights.map((x) => x.rows));
      global = r.global;
      ctx.log(`    boost-${b} round ${round}/${o.boostRounds}: site losses ${r.losses.map(f3).join(' ')}`);
    }
    const member: Member = { id: `boost-${b}`, weights: global, shared: true };
    members.push(member);
    boosted.push(member);
  }

  // Every member's image-level rows on the test fold and on the pooled validation patients.
  const test = new Map<string, Float32Array>();
  const validation = new Map<string, Float32Array>();
  for (const m of members) {
    test.set(m.id, await imageRows(ctx, m.weights, ctx.test, layout));
    validation.set(m.id, await imageRows(ctx, m.weights, ctx.pooled.validation, layout));
  }
  const testData = ctx.test;
  const val = imageLevel(ctx.pooled.validation);
  const memberScores = Object.fromEntries(members.map((m) => [m.id, score(testData, test.get(m.id) as Float32Array, layout)]));

  const rowsOf = (ms: readonly Member[]) => ms.map((m) => test.get(m.id) as Float32Array);
  const shared = members.filter((m) => m.shared && !m.id.startsWith('boost-'));
  const combiners: Record<string, EnsembleScore> = {};
  combiners['mean'] = score(testData, combineMembers(rowsOf(members), layout), layout);
  combiners['mean-shared'] = score(testData, combineMembers(rowsOf(shared), layout), layout);
  // 'weighted': the product fits over the members every site holds (global, snapshots, boosted members); the personalized keep 1/M.
  const weighted = fittedWeighting(members, validation, val.labels, layout);
  combiners['weighted'] = score(testData, combineMembers(rowsOf(members), layout, weighted?.combiner ?? 'mean-probabilities'), layout);
  if (weighted) notes.push(`weighted: ${members.map((m, i) => `${m.id} ${f3(weighted.weights[i])}`).join(', ')}`);
  const stacking = fitStacking(
    shared.map((m) => validation.get(m.id) as Float32Array),
    val.labels,
    layout,
    val.subtypes && layout.subtypeParents ? { subtypeLabels: val.subtypes } : {},
  );
  combiners['stacking'] = score(testData, combineMembers(rowsOf(shared), layout, stacking), layout);
  if (boosted.length > 1) {
    const boosting = fittedWeighting(boosted, validation, val.labels, layout);
    combiners['boosting'] = score(testData, combineMembers(rowsOf(boosted), layout, boosting?.combiner ?? 'mean-probabilities'), layout);
    if (boosting) notes.push(`boosting: ${boosted.map((m, i) => `${m.id} ${f3(boosting.weights[i])}`).join(', ')}`);
  }
  return { members: memberScores, combiners, notes };
}
