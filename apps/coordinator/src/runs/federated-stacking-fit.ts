import { Inject, Injectable } from '@nestjs/common';
import { encodeWeights, sha256Hex } from '@histofed/fl-core';
import { fromBase64, verify } from '@histofed/crypto';
import { LogisticHead, StackingCombiner, StackingFitOptions, StackingGradient, initialStackingHead, stackingStep } from '@histofed/ml';
import {
  BlobRef,
  DEFAULT_CHUNK_BYTES,
  ENSEMBLE_STACKING_MAX_FEATURE,
  ENSEMBLE_STACKING_MAX_NLL_PER_IMAGE,
  EnsembleFitEvents,
  EnsembleStackingGradientReport,
  StackingHeadName,
  chunkCount,
  ensembleStackingGradientSignedBytes,
  stackingHeadClasses,
} from '@histofed/protocol';
import { ModelDistribution } from '../federation/model-distribution';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import type { StackingEnsembleFitSummary, StackingHeadFitSummary } from '../persistence/records';
import { EnsembleFitInput, isSharedMember } from './federated-ensemble-fit';

/** Gradient steps per head unless the run says otherwise (run config ensemble.stackingIterations). */
export const STACKING_DEFAULT_ITERATIONS = 150;
/** A head's fit stops early when the norm of the objective's gradient per image (mean NLL + L2 term) falls below this. */
export const STACKING_TOLERANCE = 1e-4;
/** Seconds a site has for each step after its first (its members' outputs are computed at the first; a step is then one pass over them). */
export const STACKING_STEP_TIMEOUT_SECONDS = 120;
/** The meta-learner's optimizer (libs/ml stackingStep's defaults, written out: the fit's record names them). */
export const STACKING_FIT_OPTIONS: Required<Pick<StackingFitOptions, 'learningRate' | 'l2'>> = { learningRate: 0.05, l2: 1e-3 };

export interface StackingFitInput extends EnsembleFitInput {
  /** Most gradient steps per head. */
  readonly iterations: number;
}

export interface StackingFitResult {
  /** The ensemble manifest's combiner (undefined: keep the mean). */
  readonly combiner?: StackingCombiner;
  readonly summary: StackingEnsembleFitSummary;
}

// ---- pure parts -----------------------------------------------------------------------------

/**
 * Why a site's answer to one step cannot be used (beyond the schema and the signature), or null:
 * another site, other members or head, a gradient of the wrong shape, or numbers no `count` images
 * can give. Per image the intercepts' gradient is p - onehot(y) (each within [-1, 1], summing to 0
 * over the classes) and the coefficients' is that times a feature in [log eps, 0] (so within
 * ENSEMBLE_STACKING_MAX_FEATURE, and summing to 0 over the classes for every feature).
 */
export function stackingAnswerProblem(
  siteId: string,
  memberShas: readonly string[],
  head: StackingHeadName,
  classes: number,
  answer: { siteId: string; report: EnsembleStackingGradientReport },
): string | null {
  if (answer.siteId !== siteId) return `answered as site ${answer.siteId}`;
  const r = answer.report;
  if (r.members.length !== memberShas.length || r.members.some((s, i) => s !== memberShas[i])) return 'its numbers are about other members than those asked for';
  if (r.head !== head) return `it answers for the ${r.head} head, the ${head} head was asked for`;
  const cols = memberShas.length * classes;
  if (r.intercept.length !== classes || r.coefficients.length !== classes || r.coefficients.some((row) => row.length !== cols)) {
    return `its gradient is ${r.coefficients.length} x ${r.coefficients[0]?.length ?? 0} with ${r.intercept.length} intercepts, the head is ${classes} x ${cols}`;
  }
  const mostNll = r.count * ENSEMBLE_STACKING_MAX_NLL_PER_IMAGE;
  if (r.nll > mostNll) return `its NLL ${r.nll} exceeds what ${r.count} images can give (${mostNll})`;
  const slack = 1e-9 * r.count + 1e-9;
  const bad = r.intercept.findIndex((v) => Math.abs(v) > r.count + slack);
  if (bad >= 0) return `its intercept gradient ${r.intercept[bad]} (class ${bad}) exceeds what ${r.count} images can give (${r.count})`;
  const mostCoefficient = r.count * ENSEMBLE_STACKING_MAX_FEATURE;
  for (let c = 0; c < classes; c++) {
    const f = r.coefficients[c].findIndex((v) => Math.abs(v) > mostCoefficient + slack);
    if (f >= 0) return `its coefficient gradient ${r.coefficients[c][f]} (class ${c}, column ${f}) exceeds what ${r.count} images can give (${mostCoefficient})`;
  }
  // Over the classes, every image's gradient sums to 0: so must the site's.
  const tolerance = 1e-6 * r.count + 1e-9;
  const interceptSum = r.intercept.reduce((a, b) => a + b, 0);
  if (Math.abs(interceptSum) > tolerance) return `its intercept gradient sums to ${interceptSum} over the classes, not 0`;
  for (let f = 0; f < cols; f++) {
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += r.coefficients[c][f];
    if (Math.abs(sum) > tolerance * ENSEMBLE_STACKING_MAX_FEATURE) return `its coefficient gradient of column ${f} sums to ${sum} over the classes, not 0`;
  }
  return null;
}

/** The sites' answers added up: the pooled summed NLL, count and gradient (what pooled rows would give). */
export function sumStackingAnswers(reports: readonly Pick<StackingGradient, 'nll' | 'count' | 'coefficients' | 'intercept'>[]): StackingGradient {
  if (reports.length === 0) throw new Error('sumStackingAnswers: no answers');
  const k = reports[0].intercept.length;
  const f = reports[0].coefficients[0].length;
  const coefficients = Array.from({ length: k }, () => new Array<number>(f).fill(0));
  const intercept = new Array<number>(k).fill(0);
  let nll = 0;
  let count = 0;
  for (const r of reports) {
    nll += r.nll;
    count += r.count;
    for (let c = 0; c < k; c++) {
      intercept[c] += r.intercept[c];
      for (let j = 0; j < f; j++) coefficients[c][j] += r.coefficients[c][j];
    }
  }
  return { nll, count, coefficients, intercept };
}

/** The norm of the objective's gradient per image at `params` (the mean NLL plus stackingStep's L2 term on the coefficients). */
export function stackingGradientNorm(params: LogisticHead, sum: Pick<StackingGradient, 'count' | 'coefficients' | 'intercept'>, l2: number = STACKING_FIT_OPTIONS.l2): number {
  const n = Math.max(sum.count, 1);
  let s = 0;
  sum.coefficients.forEach((row, c) => row.forEach((v, j) => (s += (v / n + l2 * params.coefficients[c][j]) ** 2)));
  for (const v of sum.intercept) s += (v / n) ** 2;
  return Math.sqrt(s);
}

/** One site's answer to one step: its report, or why it cannot be used. */
export type StackingStepAnswer = { readonly report: Pick<StackingGradient, 'nll' | 'count' | 'coefficients' | 'intercept'> } | { readonly problem: string };

/** A head's federated fit: the fitted parameters (null: nobody answered the first step) and its record. */
export interface FederatedHeadFit {
  readonly params: LogisticHead | null;
  readonly summary: StackingHeadFitSummary | null;
  /** The sites still answering at the end. */
  readonly sites: string[];
  /** Sites dropped during this head's fit, with the step and reason. */
  readonly refused: Record<string, string>;
}

/**
 * Fits one logistic head with the sites: from initialStackingHead, each step asks every site still
 * in the fit for the summed NLL and gradient at the current parameters (in parallel), adds the
 * answers and takes an Adam step (stackingStep); after the last step (or once the summed gradient's
 * norm per image is below `tolerance`) one more question measures the fitted head. A site whose
 * answer fails is dropped for the rest of the fit, with the step and the reason; if every site
 * drops, the head keeps the last parameters the sites measured. With honest sites this is
 * fitStackingHead on the sites' pooled rows, step for step.
 */
export async function fitHeadWithSites(options: {
  readonly head: StackingHeadName;
  readonly members: number;
  readonly classes: number;
  readonly sites: readonly string[];
  readonly iterations: number;
  readonly tolerance?: number;
  readonly fit?: StackingFitOptions;
  readonly ask: (siteId: string, params: LogisticHead, step: number) => Promise<StackingStepAnswer>;
}): Promise<FederatedHeadFit> {
  const { head, iterations, ask } = options;
  const tolerance = options.tolerance ?? STACKING_TOLERANCE;
  const fit = { ...STACKING_FIT_OPTIONS, ...options.fit };
  const refused: Record<string, string> = {};
  let active = [...options.sites];
  let params = initialStackingHead(options.members, options.classes);
  const state = {};
  let measured: { params: LogisticHead; steps: number; nll: number; count: number; sites: string[] } | null = null;
  let startNll = 0;
  let steps = 0;
  let converged = false;
  for (let step = 1; ; step++) {
    const answers = await Promise.all(active.map(async (siteId) => [siteId, await ask(siteId, params, step)] as const));
    const reports: StackingStepAnswer[] = [];
    for (const [siteId, a] of answers) {
      if ('problem' in a) refused[siteId] = `${head} head, step ${step}: ${a.problem}`;
      else reports.push(a);
    }
    active = active.filter((s) => !(s in refused));
    if (active.length === 0) break;
    const sum = sumStackingAnswers(reports.map((r) => (r as { report: StackingGradient }).report));
    if (step === 1) startNll = sum.nll / sum.count;
    measured = { params, steps, nll: sum.nll / sum.count, count: sum.count, sites: [...active] };
    if (steps >= iterations) break;
    if (stackingGradientNorm(params, sum, fit.l2) < tolerance) {
      converged = true;
      break;
    }
    params = stackingStep(params, sum, state, fit);
    steps++;
  }
  if (!measured) return { params: null, summary: null, sites: [], refused };
  return {
    params: measured.params,
    summary: { steps: measured.steps, converged, images: measured.count, startNll, fittedNll: measured.nll, sites: measured.sites },
    sites: measured.sites,
    refused,
  };
}

const round6 = (x: number) => Math.round(x * 1e6) / 1e6;

// ---- the exchange ---------------------------------------------------------------------------

/**
 * The ensemble's stacking meta-learner, fitted with the sites after the calibration (issue 16, run
 * option ensemble.combiner 'stacking'): a multinomial logistic regression on the members'
 * log-probabilities (each with its manifest's temperature), one head for stage 1 and one for the
 * subtypes of a two-stage model. Every member must be one every site holds (the global model and
 * its snapshots: the run config refuses personalization with stacking). Offers every connected
 * participant the members, then fits each head by full-batch gradient steps (fitHeadWithSites):
 * per step, each site answers the summed NLL of its validation images and its gradient at the
 * current parameters (numbers only, signed); the coordinator checks each answer (site, members,
 * head, shapes, bounds, signature), adds them up and steps. A site failing a step is dropped for
 * the rest of the fit, with the reason. Never fails the run: without an answer to the first step
 * the ensemble keeps the mean.
 */
@Injectable()
export class FederatedStackingFit {
  constructor(
    private readonly sessions: SiteSessionsService,
    private readonly models: ModelDistribution,
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(LOGGER) private readonly logger: JsonLogger,
  ) {}

  async fit(input: StackingFitInput): Promise<StackingFitResult | undefined> {
    const releases: (() => void)[] = [];
    try {
      return await this.exchange(input, releases);
    } catch (e) {
      this.logger.event('error', 'runs', 'ensemble stacking failed', { runId: input.runId, error: (e as Error).message });
      return undefined;
    } finally {
      for (const release of releases) release();
    }
  }

  private async exchange(input: StackingFitInput, releases: (() => void)[]): Promise<StackingFitResult | undefined> {
    const { runId, spec } = input;
    const all = input.members.map((m) => m.id);
    const unshared = all.filter((id) => !isSharedMember(id));
    if (unshared.length > 0 || all.length === 0) {
      // A stacked head reads every member's output: one the other sites cannot score leaves nothing to fit.
      this.logger.event('warn', 'runs', 'ensemble stacking skipped: members the other sites cannot score', { runId, members: all, unshared });
      return undefined;
    }
    const encoded = input.members.map((m) => {
      const data = encodeWeights(m.weights);
      const ref: BlobRef = { sha256: sha256Hex(data), totalBytes: data.length, chunkBytes: DEFAULT_CHUNK_BYTES, count: chunkCount(data.length, DEFAULT_CHUNK_BYTES) };
      return { id: m.id, data, ref };
    });
    const shas = encoded.map((e) => e.ref.sha256);
    const members = encoded.map((e) => {
      const t = input.temperatures.get(e.id);
      return { id: e.id, model: e.ref, ...(t ? { temperature: t } : {}) };
    });
    const sites = await this.participants(runId);
    const keys = new Map<string, Uint8Array>();
    for (const siteId of sites) {
      const key = (await this.store.getSite(siteId))?.signPublicKey;
      if (key) keys.set(siteId, fromBase64(key));
    }
    const started = Date.now();
    this.logger.event('info', 'runs', 'ensemble stacking started', { runId, members: all, sites, iterations: input.iterations });
    for (const siteId of sites) {
      releases.push(this.models.offerFilesTo(siteId, encoded.map((e) => ({ sha256: e.ref.sha256, bytes: e.data.length, data: e.data })), DEFAULT_CHUNK_BYTES));
    }
    const asked = new Set<string>();
    const askFor =
      (head: StackingHeadName, classes: number) =>
      async (siteId: string, params: LogisticHead, step: number): Promise<StackingStepAnswer> => {
        // The first question computes the members' outputs at the site; later ones are one pass over them.
        const timeout = asked.has(siteId) ? Math.min(input.timeoutSeconds, STACKING_STEP_TIMEOUT_SECONDS) : input.timeoutSeconds;
        asked.add(siteId);
        const request = { runId, model: spec, stainNormalization: input.stain, members, head, step, params };
        const ack = await this.sessions.send(siteId, EnsembleFitEvents.stacking, request, timeout * 1000);
        if (!ack.ok) return { problem: ack.error };
        const problem = stackingAnswerProblem(siteId, shas, head, classes, ack) ?? this.signatureProblem(keys.get(siteId), ensembleStackingGradientSignedBytes(runId, siteId, ack.report), ack.signature);
        return problem ? { problem } : { report: ack.report };
      };

    const refused: Record<string, string> = {};
    const stage1Classes = stackingHeadClasses(spec, 'stage1');
    const stage1 = await fitHeadWithSites({ head: 'stage1', members: all.length, classes: stage1Classes, sites, iterations: input.iterations, ask: askFor('stage1', stage1Classes) });
    Object.assign(refused, stage1.refused);
    const subtypeClasses = stackingHeadClasses(spec, 'subtype');
    const subtype =
      stage1.params && subtypeClasses >= 2
        ? await fitHeadWithSites({ head: 'subtype', members: all.length, classes: subtypeClasses, sites: stage1.sites, iterations: input.iterations, ask: askFor('subtype', subtypeClasses) })
        : undefined;
    if (subtype) Object.assign(refused, subtype.refused);
    for (const [siteId, reason] of Object.entries(refused)) this.logger.event('warn', 'runs', 'ensemble stacking answer refused', { runId, siteId, reason });
    const answered = (subtype ?? stage1).sites.slice().sort();
    const rounded = (h: StackingHeadFitSummary | null): StackingHeadFitSummary | null =>
      h && { ...h, startNll: round6(h.startNll), fittedNll: round6(h.fittedNll), sites: [...h.sites].sort() };
    const summary: StackingEnsembleFitSummary = {
      combiner: stage1.params ? 'stacking' : 'mean-probabilities',
      fittedMembers: all,
      stacking: { iterations: input.iterations, stage1: rounded(stage1.summary), ...(subtype ? { subtype: rounded(subtype.summary) } : {}) },
      sites: { answered, refused },
    };
    this.logger.event('info', 'runs', 'ensemble stacking finished', { runId, ...summary, seconds: round6((Date.now() - started) / 1000) });
    if (!stage1.params || !stage1.summary) return { summary };
    const heads = [`stage 1: ${stage1.summary.steps} steps on ${stage1.summary.images} images`];
    if (subtype?.summary) heads.push(`subtypes: ${subtype.summary.steps} steps on ${subtype.summary.images} images`);
    return {
      combiner: {
        kind: 'stacking',
        stage1: stage1.params,
        ...(subtype?.params ? { subtype: subtype.params } : {}),
        fittedOn: `federated: ${stage1.summary.sites.length} sites' validation images, logistic regression on the log-probabilities of ${all.join(', ')} (${heads.join('; ')})`.slice(0, 500),
      },
      summary,
    };
  }

  /** The run's completed rounds' participants that are connected now. */
  private async participants(runId: string): Promise<string[]> {
    const rounds = await this.store.listRounds(runId);
    const took = new Set(rounds.filter((r) => r.status === 'completed').flatMap((r) => r.participants));
    return (await this.sessions.available()).map((s) => s.siteId).filter((s) => took.has(s));
  }

  private signatureProblem(key: Uint8Array | undefined, bytes: Uint8Array, signature: string): string | null {
    if (!key) return 'no signing key is enrolled for the site';
    return verify(bytes, fromBase64(signature), key) ? null : 'the signature does not verify with the enrolled signing key';
  }
}
