/**
 * Active learning at a site (issue 16): which unlabelled images a pathologist should label next.
 * Used by `histofed-site suggest` (apps/site-client) and by bench:active.
 * Pure: takes the predictor's per-image outputs (an image's probabilities are the mean of its
 * tiles', its tile disagreement how many tiles disagree with it) and returns the ranked queue.
 *
 * Scores (higher = label it sooner):
 * - `entropy`: the stage-1 predictive entropy (/ log 2);
 * - `margin`: 1 - (p1 - p2), the two most probable stage-1 classes;
 * - `bald`: the mutual information between the prediction and the MC dropout mask (BALD);
 * - `ensemble`: the mutual information between the prediction and the ensemble member;
 * - `coreset`: k-center greedy on the images' mean tile features (the score is the distance to the
 *   nearest image already chosen or labelled): diversity by construction;
 * - `random`: seeded uniform draws (the baseline).
 * Diversity across patients, for every strategy: at most `perPatient` images of one patient (default
 * ceil(budget / patients)); with the default cap, when it leaves the budget unfilled (patients with
 * fewer images than the cap), the rest is filled by score regardless of the patient. An explicit
 * `perPatient` is a hard cap.
 */
import { mulberry32 } from '@histofed/data';
import { ValidationError } from '@histofed/fl-core';

export const SUGGEST_STRATEGIES = ['entropy', 'margin', 'bald', 'ensemble', 'coreset', 'random'] as const;
export type SuggestStrategy = (typeof SUGGEST_STRATEGIES)[number];

/** One unlabelled image as the predictor saw it. */
export interface Candidate {
  readonly file: string;
  readonly patient: string;
  readonly stage1: { readonly class: string; readonly probability: number; readonly probabilities: Readonly<Record<string, number>> };
  readonly subtype: { readonly class: string; readonly probability: number } | null;
  readonly uncertainty: {
    readonly entropy: number;
    readonly tiles: number;
    readonly tileDisagreement: number;
    readonly memberMutualInformation?: number;
    readonly mcDropoutMutualInformation?: number;
  };
  /** Mean tile features (coreset only). */
  readonly features?: Float32Array;
}

export interface RankOptions {
  readonly strategy: SuggestStrategy;
  readonly budget: number;
  /** Hard cap of images per patient; default ceil(budget / patients), lifted if the budget is not filled. */
  readonly perPatient?: number;
  readonly seed?: number;
  /** Coreset: features of images already labelled (the first centers). */
  readonly labelledFeatures?: readonly Float32Array[];
}

export interface QueueEntry {
  readonly rank: number;
  readonly file: string;
  readonly patient: string;
  readonly suggestedClass: string;
  readonly suggestedSubtype: string | null;
  readonly probability: number;
  readonly score: number;
  readonly strategy: SuggestStrategy;
  readonly why: string;
}

export interface Ranking {
  readonly queue: QueueEntry[];
  readonly patients: number;
  readonly perPatientCap: number;
  /** Whether the default cap had to be lifted to fill the budget. */
  readonly capLifted: boolean;
}

export function marginScore(probabilities: Readonly<Record<string, number>>): number {
  const p = Object.values(probabilities).sort((a, b) => b - a);
  return 1 - ((p[0] ?? 0) - (p[1] ?? 0));
}

const f3 = (x: number) => x.toFixed(3);

/** The strategy's score of each candidate; refuses a strategy the model cannot serve. */
export function scores(strategy: SuggestStrategy, candidates: readonly Candidate[], seed = 1): number[] {
  switch (strategy) {
    case 'entropy':
      return candidates.map((c) => c.uncertainty.entropy);
    case 'margin':
      return candidates.map((c) => marginScore(c.stage1.probabilities));
    case 'bald': {
      if (candidates.some((c) => c.uncertainty.mcDropoutMutualInformation === undefined)) {
        throw new ValidationError('--strategy bald needs MC dropout, and this model has no dropout layer: use entropy, margin or coreset (or an ensemble with --strategy ensemble)');
      }
      return candidates.map((c) => c.uncertainty.mcDropoutMutualInformation as number);
    }
    case 'ensemble': {
      if (candidates.some((c) => c.uncertainty.memberMutualInformation === undefined)) {
        throw new ValidationError("--strategy ensemble needs an ensemble: --model is a single model; give an ensemble directory (e.g. a run's final models, <state dir>/models/<run id>)");
      }
      return candidates.map((c) => c.uncertainty.memberMutualInformation as number);
    }
    case 'random': {
      const next = mulberry32(seed);
      return candidates.map(() => next());
    }
    case 'coreset':
      throw new Error('scores: coreset is ranked by kCenterGreedy');
  }
}

function distance2(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

/** Deterministic order of ties: higher score first, then file name. */
const byScore = (candidates: readonly Candidate[], score: readonly number[]) => (a: number, b: number) =>
  score[b] - score[a] || (candidates[a].file < candidates[b].file ? -1 : candidates[a].file > candidates[b].file ? 1 : 0);

/**
 * Ranks `candidates` for labelling: the first `budget` images by the strategy, with at most the
 * per-patient cap of one patient (see the module comment).
 */
export function rankForLabelling(candidates: readonly Candidate[], o: RankOptions): Ranking {
  if (!Number.isInteger(o.budget) || o.budget < 1) throw new ValidationError(`--budget must be a positive integer, got ${o.budget}`);
  if (o.perPatient !== undefined && (!Number.isInteger(o.perPatient) || o.perPatient < 1)) {
    throw new ValidationError(`--per-patient must be a positive integer, got ${o.perPatient}`);
  }
  const patientsOf = new Map<string, number>();
  for (const c of candidates) patientsOf.set(c.patient, (patientsOf.get(c.patient) ?? 0) + 1);
  const patients = patientsOf.size;
  const budget = Math.min(o.budget, candidates.length);
  const cap = o.perPatient ?? Math.max(1, Math.ceil(o.budget / Math.max(1, patients)));
  const taken = new Map<string, number>();
  const chosen: { index: number; score: number; capLifted: boolean }[] = [];
  const picked = new Set<number>();
  let capLifted = false;
  const underCap = (i: number) => (taken.get(candidates[i].patient) ?? 0) < cap;
  const take = (i: number, score: number) => {
    picked.add(i);
    taken.set(candidates[i].patient, (taken.get(candidates[i].patient) ?? 0) + 1);
    chosen.push({ index: i, score, capLifted });
  };

  if (o.strategy === 'coreset') {
    if (candidates.some((c) => !c.features)) throw new Error('rankForLabelling: coreset needs every candidate\'s features');
    const feats = candidates.map((c) => c.features as Float32Array);
    const minDist = new Float64Array(candidates.length).fill(Infinity);
    const centers = o.labelledFeatures && o.labelledFeatures.length > 0 ? o.labelledFeatures : candidates.length > 0 ? [meanFeatures(feats)] : [];
    for (const center of centers) for (let i = 0; i < feats.length; i++) minDist[i] = Math.min(minDist[i], distance2(feats[i], center));
    while (chosen.length < budget) {
      let best = -1;
      for (let pass = 0; pass < 2 && best < 0; pass++) {
        const lift = pass === 1;
        if (lift && o.perPatient !== undefined) break;
        for (let i = 0; i < feats.length; i++) {
          if (picked.has(i) || (!lift && !underCap(i))) continue;
          if (best < 0 || minDist[i] > minDist[best] || (minDist[i] === minDist[best] && candidates[i].file < candidates[best].file)) best = i;
        }
        if (lift && best >= 0) capLifted = true;
      }
      if (best < 0) break;
      take(best, Math.sqrt(minDist[best]));
      for (let i = 0; i < feats.length; i++) minDist[i] = Math.min(minDist[i], distance2(feats[i], feats[best]));
    }
  } else {
    const score = scores(o.strategy, candidates, o.seed ?? 1);
    const order = candidates.map((_, i) => i).sort(byScore(candidates, score));
    for (const i of order) {
      if (chosen.length >= budget) break;
      if (underCap(i)) take(i, score[i]);
    }
    if (chosen.length < budget && o.perPatient === undefined) {
      capLifted = true;
      for (const i of order) {
        if (chosen.length >= budget) break;
        if (!picked.has(i)) take(i, score[i]);
      }
    }
  }

  const queue = chosen.map(({ index, score, capLifted: lifted }, r) => {
    const c = candidates[index];
    const n = [...chosen.slice(0, r + 1)].filter((x) => candidates[x.index].patient === c.patient).length;
    return {
      rank: r + 1,
      file: c.file,
      patient: c.patient,
      suggestedClass: c.stage1.class,
      suggestedSubtype: c.subtype?.class ?? null,
      probability: c.stage1.probability,
      score,
      strategy: o.strategy,
      why: why(o.strategy, c, score, { n, of: patientsOf.get(c.patient) ?? 0, cap, lifted }),
    };
  });
  return { queue, patients, perPatientCap: cap, capLifted };
}

function meanFeatures(feats: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(feats[0].length);
  for (const f of feats) for (let j = 0; j < out.length; j++) out[j] += f[j] / feats.length;
  return out;
}

function why(strategy: SuggestStrategy, c: Candidate, score: number, p: { n: number; of: number; cap: number; lifted: boolean }): string {
  const u = c.uncertainty;
  const head =
    strategy === 'entropy'
      ? `entropy ${f3(score)}`
      : strategy === 'margin'
        ? `margin ${f3(1 - score)} between the two most probable classes`
        : strategy === 'bald'
          ? `MC dropout mutual information ${f3(score)}`
          : strategy === 'ensemble'
            ? `ensemble members disagree: mutual information ${f3(score)}`
            : strategy === 'coreset'
              ? `far from what is labelled or queued: feature distance ${f3(score)}`
              : 'random draw (baseline)';
  const parts = [
    head,
    `P(${c.stage1.class}) ${f3(c.stage1.probability)}`,
    ...(u.tiles > 1 ? [`${Math.round(u.tileDisagreement * u.tiles)} of ${u.tiles} tiles disagree`] : []),
    `image ${p.n} of ${p.of} of patient ${c.patient} queued${p.lifted ? ' (over the per-patient cap, to fill the budget)' : ` (cap ${p.cap})`}`,
  ];
  return parts.join('; ');
}
