import { Inject, Injectable } from '@nestjs/common';
import { ModelSpec, StainNormalizationTarget, WeightSet, encodeWeights, sha256Hex } from '@histofed/fl-core';
import { fromBase64, verify } from '@histofed/crypto';
import {
  DEFAULT_TEMPERATURE_GRID,
  ENTROPY_HISTOGRAM_BINS,
  RELIABILITY_BINS,
  ModelCalibration,
  ModelReading,
  OutputLayout,
  ReliabilityCounts,
  ReviewRule,
  ReviewThresholdChoice,
  TemperatureNll,
  applyTemperature,
  chooseTemperature,
  eceOfCounts,
  mergeEntropyHistograms,
  mergeReliabilityCounts,
  reliabilityCounts,
  reliabilityTableOfCounts,
  reviewThresholdFor,
} from '@histofed/ml';
import {
  BlobRef,
  CALIBRATION_ENTROPY_BINS,
  CALIBRATION_RELIABILITY_BINS,
  CalibrationEvents,
  CalibrationModelId,
  CalibrationNllReport,
  CalibrationReviewReport,
  CalibrationTemperatures,
  DEFAULT_CHUNK_BYTES,
  ReliabilityCountsWire,
  calibrationNllSignedBytes,
  calibrationReviewSignedBytes,
  chunkCount,
} from '@histofed/protocol';
import type { Equal, Expect } from '@histofed/protocol';
import type { ExportReadings } from '../evaluation/model-exporter.service';
import { ModelDistribution } from '../federation/model-distribution';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import type { CalibrationSummary, ReviewChoiceSummary, ReviewSummary, RunConfig } from '../persistence/records';

/** A run's calibration settings (run config `calibration`, defaults applied). */
export type CalibrationSettings = NonNullable<RunConfig['calibration']>;

/** A model the run exports, as the orchestrator holds it. */
export interface CalibratedMember {
  readonly id: string;
  readonly weights: WeightSet;
}

export interface CalibrationInput {
  readonly runId: string;
  readonly spec: ModelSpec;
  readonly stain: StainNormalizationTarget | null;
  readonly settings: CalibrationSettings;
  /** 'global', or with FedBN one 'global@<site>' per site (the global model with that site's local tensors). */
  readonly globalMembers: readonly CalibratedMember[];
  /** Personalized models, by site id. */
  readonly personalized: readonly CalibratedMember[];
  /** The central evaluation of the members (null without a central test set): measured with the chosen temperatures, never fitted on. */
  readonly central: { readonly labels: Int32Array; readonly probabilities: Record<string, Float32Array> } | null;
}

export interface CalibrationResult {
  /** What the export writes into each member's manifest and the ensemble's. */
  readonly readings: ExportReadings;
  readonly calibration?: CalibrationSummary;
  readonly review?: ReviewSummary;
}

/** A model one site is asked about. */
interface AskedModel {
  readonly id: CalibrationModelId;
  /** The exported member it is ('global', 'global@<site>' or the site id). */
  readonly member: string;
  readonly ref: BlobRef;
}

// ---- pure parts -----------------------------------------------------------------------------

/** The model the site holds of the run's global model: 'global', or with FedBN its own 'global@<site>'. */
export function globalMemberFor(globalMembers: readonly { id: string }[], siteId: string): string | undefined {
  return globalMembers.find((m) => m.id === 'global')?.id ?? globalMembers.find((m) => m.id === `global@${siteId}`)?.id;
}

const TOLERANCE = 1e-6;

/** Why reliability counts over `images` images cannot be right, or null (each confidence lies in its bin, >= 1/k). */
export function reliabilityProblem(r: ReliabilityCountsWire, images: number, numClasses: number): string | null {
  const bins = r.counts.length;
  const total = r.counts.reduce((a, b) => a + b, 0);
  if (total !== images) return `its reliability bins count ${total} images, not ${images}`;
  for (let b = 0; b < bins; b++) {
    const n = r.counts[b];
    if (r.correct[b] > n) return `reliability bin ${b}: ${r.correct[b]} correct of ${n} images`;
    const low = Math.max(b / bins, 1 / numClasses) * n - TOLERANCE * (n + 1);
    const high = ((b + 1) / bins) * n + TOLERANCE * (n + 1);
    if (r.confidenceSums[b] < low || r.confidenceSums[b] > high) return `reliability bin ${b}: summed confidence ${r.confidenceSums[b]} does not fit ${n} images in (${b / bins}, ${(b + 1) / bins}]`;
  }
  return null;
}

/** The models of an answer against those asked: same ids, same blobs, each once. */
function modelsProblem(asked: readonly AskedModel[], answered: readonly { id: string; sha256: string }[]): string | null {
  const ids = answered.map((m) => m.id);
  if (new Set(ids).size !== ids.length) return 'it reports a model twice';
  if (ids.length !== asked.length || asked.some((a) => !ids.includes(a.id))) return `it reports ${ids.join(', ') || 'no model'}, ${asked.map((a) => a.id).join(', ')} were asked for`;
  for (const m of answered) {
    const a = asked.find((x) => x.id === m.id)!;
    if (m.sha256 !== a.ref.sha256) return `its ${m.id} numbers are about model ${m.sha256.slice(0, 12)}, not ${a.ref.sha256.slice(0, 12)}`;
  }
  return null;
}

/** Why a site's answer to the NLL question cannot be used (beyond the schema and the signature), or null. */
export function nllAnswerProblem(
  siteId: string,
  asked: readonly AskedModel[],
  answer: { siteId: string; models: readonly CalibrationNllReport[] },
  grid: readonly number[],
  spec: Pick<ModelSpec, 'numClasses' | 'subtypeParents'>,
): string | null {
  if (answer.siteId !== siteId) return `answered as site ${answer.siteId}`;
  const models = modelsProblem(asked, answer.models);
  if (models) return models;
  const twoStage = (spec.subtypeParents?.length ?? 0) > 0;
  for (const m of answer.models) {
    if (m.stage1.nll.length !== grid.length) return `its ${m.id} stage-1 sums are ${m.stage1.nll.length} for ${grid.length} temperatures`;
    if (m.stage1.count !== m.images) return `its ${m.id} stage-1 sums count ${m.stage1.count} of ${m.images} images`;
    if (m.subtype && !twoStage) return `it reports a subtype head the model does not have`;
    if (m.subtype && m.subtype.nll.length !== grid.length) return `its ${m.id} subtype sums are ${m.subtype.nll.length} for ${grid.length} temperatures`;
    if (m.subtype && m.subtype.count > m.images) return `its ${m.id} subtype sums count ${m.subtype.count} of ${m.images} images`;
    const reliability = reliabilityProblem(m.reliability, m.images, spec.numClasses);
    if (reliability) return `${m.id}: ${reliability}`;
  }
  return null;
}

/** Why a site's answer to the review question cannot be used, or null. */
export function reviewAnswerProblem(
  siteId: string,
  asked: readonly AskedModel[],
  answer: { siteId: string; models: readonly CalibrationReviewReport[] },
  spec: Pick<ModelSpec, 'numClasses'>,
): string | null {
  if (answer.siteId !== siteId) return `answered as site ${answer.siteId}`;
  const models = modelsProblem(asked, answer.models);
  if (models) return models;
  for (const m of answer.models) {
    const reliability = reliabilityProblem(m.reliability, m.images, spec.numClasses);
    if (reliability) return `${m.id}: ${reliability}`;
    const total = m.entropy.counts.reduce((a, b) => a + b, 0);
    if (total !== m.images) return `its ${m.id} entropy histogram counts ${total} images, not ${m.images}`;
    const bad = m.entropy.errors.findIndex((e, b) => e > m.entropy.counts[b]);
    if (bad >= 0) return `its ${m.id} entropy bin ${bad} has ${m.entropy.errors[bad]} errors of ${m.entropy.counts[bad]} images`;
  }
  return null;
}

/** The temperatures several parties' NLL sums choose (stage 1; the subtype head when any party reported it), or null. */
export function chooseTemperatures(grid: readonly number[], reports: readonly CalibrationNllReport[]): (CalibrationTemperatures & { images: number; meanNll: number; meanNllAtOne: number | null }) | null {
  const part = (h: { nll: number[]; count: number }): TemperatureNll => ({ grid, nll: h.nll, count: h.count });
  const stage1 = chooseTemperature(reports.map((r) => part(r.stage1)));
  if (!stage1) return null;
  const subtype = chooseTemperature(reports.flatMap((r) => (r.subtype ? [part(r.subtype)] : [])));
  return { stage1: stage1.temperature, ...(subtype ? { subtype: subtype.temperature } : {}), images: stage1.count, meanNll: stage1.meanNll, meanNllAtOne: stage1.meanNllAtOne };
}

/** Stage-1 block of output rows (width k + subtypes). */
function stage1Block(rows: Float32Array, layout: OutputLayout): Float32Array {
  const k = layout.numClasses;
  const width = k + (layout.subtypeParents?.length ?? 0);
  if (width === k) return rows;
  const n = rows.length / width;
  const out = new Float32Array(n * k);
  for (let i = 0; i < n; i++) out.set(rows.subarray(i * width, i * width + k), i * k);
  return out;
}

/**
 * The global model on the central test set, before and after its temperatures: with FedBN the mean
 * of its 'global@<site>' members' rows, each member calibrated first (the ensemble's rule).
 */
export function centralCalibration(labels: Int32Array, memberRows: readonly Float32Array[], layout: OutputLayout, t: CalibrationTemperatures) {
  const mean = (rows: readonly Float32Array[]) => {
    const out = new Float32Array(rows[0].length);
    for (const r of rows) for (let i = 0; i < r.length; i++) out[i] += r[i] / rows.length;
    return out;
  };
  const before = reliabilityCounts(stage1Block(mean(memberRows), layout), labels, layout.numClasses);
  const after = reliabilityCounts(stage1Block(mean(memberRows.map((r) => applyTemperature(r, layout, t))), layout), labels, layout.numClasses);
  return {
    eceBefore: eceOfCounts(before),
    eceAfter: eceOfCounts(after),
    reliabilityBefore: reliabilityTableOfCounts(before),
    reliabilityAfter: reliabilityTableOfCounts(after),
  };
}

const round6 = (x: number | null) => (x === null ? null : Math.round(x * 1e6) / 1e6);

function choiceSummary(c: ReviewThresholdChoice): ReviewChoiceSummary {
  return { threshold: c.threshold, images: c.images, reviewRate: round6(c.reviewRate)!, accuracyAll: round6(c.accuracyAll)!, accuracyUnflagged: round6(c.accuracyUnflagged) };
}

const text = (s: string) => (s.length <= 500 ? s : `${s.slice(0, 497)}...`);

// ---- the exchange ---------------------------------------------------------------------------

/**
 * Calibration and the review rule, fitted federatedly after the last round (issue 15). Asks every
 * connected participant about the run's models it holds (the global model as it uses it, its own
 * personalized model), each offered to that site only: first the summed NLL over the temperature
 * grid and the reliability counts before calibration; the coordinator picks the global model's
 * temperatures from all sites' sums and each personalized model's from its own site's; then,
 * calibrated, the reliability counts after and the entropy histogram with the errors per bin, from
 * which it picks the threshold that flags ~reviewRate of the validation images. A site that does
 * not answer in time, or whose answer fails a check (signature, shapes, counts that cannot be), is
 * left out with the reason. Never fails the run: what cannot be fitted is left out of the models.
 */
@Injectable()
export class FederatedCalibration {
  constructor(
    private readonly sessions: SiteSessionsService,
    private readonly models: ModelDistribution,
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(LOGGER) private readonly logger: JsonLogger,
  ) {}

  async fit(input: CalibrationInput): Promise<CalibrationResult | undefined> {
    const releases: (() => void)[] = [];
    try {
      return await this.exchange(input, releases);
    } catch (e) {
      this.logger.event('error', 'runs', 'calibration failed', { runId: input.runId, error: (e as Error).message });
      return undefined;
    } finally {
      for (const release of releases) release();
    }
  }

  private async exchange(input: CalibrationInput, releases: (() => void)[]): Promise<CalibrationResult | undefined> {
    const { runId, spec, settings } = input;
    const grid = settings.grid ?? DEFAULT_TEMPERATURE_GRID;
    const timeoutMs = settings.timeoutSeconds * 1000;
    const layout: OutputLayout = { numClasses: spec.numClasses, ...(spec.subtypeParents?.length ? { subtypeParents: spec.subtypeParents } : {}) };
    const twoStage = layout.subtypeParents !== undefined;
    const sites = await this.participants(runId, input);
    const asked = this.offer(input, sites, releases);
    const refused: Record<string, string> = {};
    const askedSites = [...asked.keys()].sort();
    if (askedSites.length === 0) {
      this.logger.event('warn', 'runs', 'calibration: no connected participant holds a model to calibrate', { runId });
      return undefined;
    }
    this.logger.event('info', 'runs', 'calibration started', {
      runId,
      sites: Object.fromEntries(askedSites.map((s) => [s, asked.get(s)!.map((m) => m.member)])),
      temperature: settings.temperature,
      reviewRate: settings.reviewRate,
      temperatures: settings.temperature ? grid.length : 0,
    });
    const base = { runId, model: spec, stainNormalization: input.stain };

    // 1. Summed NLL over the grid, and reliability before calibration.
    const nll = new Map<string, CalibrationNllReport[]>();
    if (settings.temperature) {
      await Promise.all(
        askedSites.map(async (siteId) => {
          const models = asked.get(siteId)!;
          const ack = await this.sessions.send(siteId, CalibrationEvents.nll, { ...base, grid: [...grid], models: models.map((m) => ({ id: m.id, model: m.ref })) }, timeoutMs);
          if (!ack.ok) return void (refused[siteId] = ack.error);
          const problem =
            nllAnswerProblem(siteId, models, ack, grid, spec) ??
            (await this.signatureProblem(siteId, calibrationNllSignedBytes(runId, siteId, ack.models), ack.signature));
          if (problem) return void (refused[siteId] = problem);
          nll.set(siteId, ack.models);
        }),
      );
    }
    const reportOf = <R extends { id: string }>(answers: ReadonlyMap<string, R[]>, siteId: string, id: CalibrationModelId) => answers.get(siteId)?.find((m) => m.id === id);
    const globalNll = [...nll.keys()].sort().flatMap((s) => reportOf(nll, s, 'global') ?? []);
    const globalT = settings.temperature ? chooseTemperatures(grid, globalNll) : null;
    if (globalT) {
      this.logger.event('info', 'runs', 'temperature chosen', { runId, model: 'global', ...globalT, sites: [...nll.keys()].filter((s) => reportOf(nll, s, 'global')).sort() });
    }
    const personalT = new Map<string, NonNullable<ReturnType<typeof chooseTemperatures>>>();
    for (const [siteId] of nll) {
      const own = reportOf(nll, siteId, 'personalized');
      const t = own ? chooseTemperatures(grid, [own]) : null;
      if (t) {
        personalT.set(siteId, t);
        this.logger.event('info', 'runs', 'temperature chosen', { runId, model: 'personalized', siteId, ...t });
      }
    }

    // 2. Calibrated: reliability after, and the entropy histogram with the errors per bin.
    const review = new Map<string, CalibrationReviewReport[]>();
    const temperatureOf = (siteId: string, id: CalibrationModelId): CalibrationTemperatures => {
      const t = id === 'global' ? globalT : personalT.get(siteId);
      return t ? { stage1: t.stage1, ...(t.subtype !== undefined ? { subtype: t.subtype } : {}) } : { stage1: 1 };
    };
    const secondRound = settings.temperature ? askedSites.filter((s) => nll.has(s)) : askedSites;
    await Promise.all(
      secondRound.map(async (siteId) => {
        const models = asked.get(siteId)!;
        const ack = await this.sessions.send(
          siteId,
          CalibrationEvents.review,
          { ...base, models: models.map((m) => ({ id: m.id, model: m.ref, temperature: temperatureOf(siteId, m.id) })) },
          timeoutMs,
        );
        if (!ack.ok) return void (refused[siteId] = ack.error);
        const problem =
          reviewAnswerProblem(siteId, models, ack, spec) ??
          (await this.signatureProblem(siteId, calibrationReviewSignedBytes(runId, siteId, ack.models), ack.signature));
        if (problem) return void (refused[siteId] = problem);
        review.set(siteId, ack.models);
      }),
    );
    for (const [siteId, reason] of Object.entries(refused)) this.logger.event('warn', 'runs', 'calibration answer refused', { runId, siteId, reason });

    // 3. What the models carry, and the report.
    const answered = [...new Set([...nll.keys(), ...review.keys()])].sort();
    const counts = (answers: ReadonlyMap<string, { id: string; reliability: ReliabilityCounts }[]>, siteId: string, id: CalibrationModelId) =>
      reportOf(answers, siteId, id)?.reliability;
    const eceOf = (parts: (ReliabilityCounts | undefined)[]) => {
      const present = parts.filter((p): p is ReliabilityCounts => p !== undefined);
      return present.length ? round6(eceOfCounts(mergeReliabilityCounts(present))) : null;
    };
    const globalSites = answered.filter((s) => reportOf(nll, s, 'global') || reportOf(review, s, 'global'));
    const globalBefore = eceOf(globalSites.map((s) => counts(nll, s, 'global')));
    const globalAfter = eceOf(globalSites.map((s) => counts(review, s, 'global')));
    const gridText = `grid ${grid[0]}..${grid.at(-1)} (${grid.length} temperatures)`;
    const calibrationFor = (t: ReturnType<typeof chooseTemperatures>, fittedOn: string, eceBefore: number | null, eceAfter: number | null): ModelCalibration | undefined =>
      t
        ? {
            method: 'temperature',
            stage1: t.stage1,
            ...(t.subtype !== undefined ? { subtype: t.subtype } : {}),
            fittedOn: text(fittedOn),
            ...(eceBefore !== null ? { eceBefore } : {}),
            ...(eceAfter !== null && review.size > 0 ? { eceAfter } : {}),
          }
        : undefined;
    const ruleFor = (choice: ReviewThresholdChoice | null, chosenOn: string): ReviewRule | undefined =>
      choice && settings.reviewRate !== null
        ? { measure: 'entropy', threshold: choice.threshold, targetReviewRate: settings.reviewRate, chosenOn: text(chosenOn) }
        : undefined;
    const histogramOf = (parts: (CalibrationReviewReport | undefined)[]) => {
      const present = parts.filter((p): p is CalibrationReviewReport => p !== undefined).map((p) => p.entropy);
      return present.length ? mergeEntropyHistograms(present) : null;
    };
    const globalHistogram = histogramOf(answered.map((s) => reportOf(review, s, 'global')));
    const globalChoice = globalHistogram && settings.reviewRate !== null ? reviewThresholdFor(globalHistogram, settings.reviewRate) : null;
    const reviewSites = answered.filter((s) => reportOf(review, s, 'global'));
    const globalReading: ModelReading = {
      calibration: calibrationFor(globalT, `federated: ${globalNll.length} sites, ${globalT?.images ?? 0} validation images, ${gridText}`, globalBefore, globalAfter),
      review: ruleFor(globalChoice, `pooled validation images of ${reviewSites.length} sites (${globalChoice?.images ?? 0} images), calibrated stage-1 entropy in bins of ${1 / CALIBRATION_ENTROPY_BINS}: ${((globalChoice?.reviewRate ?? 0) * 100).toFixed(1)} % flagged`),
    };
    if (globalChoice) this.logger.event('info', 'runs', 'review threshold chosen', { runId, model: 'global', ...choiceSummary(globalChoice), sites: reviewSites });
    const members = new Map<string, ModelReading>();
    for (const m of input.globalMembers) members.set(m.id, clean(globalReading));
    const personalized: CalibrationSummary['personalized'] = {};
    const personalizedReview: ReviewSummary['personalized'] = {};
    for (const m of input.personalized) {
      const siteId = m.id;
      const t = personalT.get(siteId) ?? null;
      const before = eceOf([counts(nll, siteId, 'personalized')]);
      const after = eceOf([counts(review, siteId, 'personalized')]);
      const h = histogramOf([reportOf(review, siteId, 'personalized')]);
      const choice = h && settings.reviewRate !== null ? reviewThresholdFor(h, settings.reviewRate) : null;
      members.set(siteId, clean({
        calibration: calibrationFor(t, `site ${siteId}'s validation images (${t?.images ?? 0}), ${gridText}`, before, after),
        review: ruleFor(choice, `site ${siteId}'s validation images (${choice?.images ?? 0}), calibrated stage-1 entropy in bins of ${1 / CALIBRATION_ENTROPY_BINS}: ${((choice?.reviewRate ?? 0) * 100).toFixed(1)} % flagged`),
      }));
      if (t) personalized[siteId] = { temperature: { stage1: t.stage1, ...(t.subtype !== undefined ? { subtype: t.subtype } : {}) }, eceBefore: before, eceAfter: after };
      if (choice) {
        personalizedReview[siteId] = choiceSummary(choice);
        this.logger.event('info', 'runs', 'review threshold chosen', { runId, model: 'personalized', siteId, ...choiceSummary(choice) });
      }
    }
    // The ensemble averages its members' probabilities, each member calibrated by its own
    // temperature first (its manifest): no temperature of its own on the mean (T = 1), and the
    // global model's review threshold on the entropy of the mean.
    const ensemble = clean({
      calibration: [...members.values()].some((r) => r.calibration)
        ? {
            method: 'temperature' as const,
            stage1: 1,
            ...(twoStage ? { subtype: 1 } : {}),
            fittedOn: "none on the mean: each member's own temperature (in its manifest) is applied before the members are averaged",
          }
        : undefined,
      review: globalReading.review ? { ...globalReading.review, chosenOn: text(`the global model's rule: ${globalReading.review.chosenOn}`) } : undefined,
    });

    let central: ReturnType<typeof centralCalibration> | null = null;
    if (globalT && input.central) {
      const rows = input.globalMembers.map((m) => input.central!.probabilities[m.id]).filter((r): r is Float32Array => r !== undefined);
      if (rows.length === input.globalMembers.length && rows.length > 0) central = centralCalibration(input.central.labels, rows, layout, { stage1: globalT.stage1, ...(globalT.subtype !== undefined ? { subtype: globalT.subtype } : {}) });
    }
    const calibration: CalibrationSummary | undefined = settings.temperature
      ? {
          global: {
            temperature: globalT ? { stage1: globalT.stage1, ...(globalT.subtype !== undefined ? { subtype: globalT.subtype } : {}) } : null,
            eceBefore: round6(central?.eceBefore ?? null),
            eceAfter: round6(central?.eceAfter ?? null),
            ...(central ? { reliabilityBefore: central.reliabilityBefore.map(roundBin), reliabilityAfter: central.reliabilityAfter.map(roundBin) } : {}),
            validation: { images: globalT?.images ?? 0, eceBefore: globalBefore, eceAfter: globalAfter },
            perSite: Object.fromEntries(globalSites.map((s) => [s, { eceBefore: eceOf([counts(nll, s, 'global')]), eceAfter: eceOf([counts(review, s, 'global')]) }])),
          },
          personalized,
          sites: { answered, refused },
        }
      : undefined;
    const reviewSummary: ReviewSummary | undefined =
      settings.reviewRate !== null
        ? { measure: 'entropy', targetReviewRate: settings.reviewRate, global: globalChoice ? choiceSummary(globalChoice) : null, personalized: personalizedReview }
        : undefined;
    this.logger.event('info', 'runs', 'calibration finished', {
      runId,
      answered,
      refused,
      temperature: calibration?.global.temperature ?? null,
      centralEce: central ? { before: round6(central.eceBefore), after: round6(central.eceAfter) } : null,
      validationEce: { before: globalBefore, after: globalAfter },
      review: reviewSummary?.global ?? null,
    });
    return {
      readings: { members, ...(Object.keys(ensemble).length ? { ensemble } : {}) },
      ...(calibration ? { calibration } : {}),
      ...(reviewSummary ? { review: reviewSummary } : {}),
    };
  }

  /** The run's participants (completed rounds' contributors and personalized sites) that are connected now. */
  private async participants(runId: string, input: CalibrationInput): Promise<string[]> {
    const rounds = await this.store.listRounds(runId);
    const took = new Set([...rounds.filter((r) => r.status === 'completed').flatMap((r) => r.participants), ...input.personalized.map((m) => m.id)]);
    return (await this.sessions.available()).map((s) => s.siteId).filter((s) => took.has(s));
  }

  /** Offers each site the models it holds (to that site only, in memory until released). */
  private offer(input: CalibrationInput, sites: readonly string[], releases: (() => void)[]): Map<string, AskedModel[]> {
    const encoded = new Map<string, { data: Uint8Array; sha256: string }>();
    const encode = (m: CalibratedMember) => {
      let e = encoded.get(m.id);
      if (!e) {
        const data = encodeWeights(m.weights);
        encoded.set(m.id, (e = { data, sha256: sha256Hex(data) }));
      }
      return e;
    };
    const asked = new Map<string, AskedModel[]>();
    for (const siteId of sites) {
      const wanted: { id: CalibrationModelId; member: CalibratedMember }[] = [];
      const g = globalMemberFor(input.globalMembers, siteId);
      if (g) wanted.push({ id: 'global', member: input.globalMembers.find((m) => m.id === g)! });
      const own = input.personalized.find((m) => m.id === siteId);
      if (own) wanted.push({ id: 'personalized', member: own });
      if (wanted.length === 0) continue;
      const models = wanted.map(({ id, member }) => {
        const e = encode(member);
        const ref: BlobRef = { sha256: e.sha256, totalBytes: e.data.length, chunkBytes: DEFAULT_CHUNK_BYTES, count: chunkCount(e.data.length, DEFAULT_CHUNK_BYTES) };
        return { id, member: member.id, ref, data: e.data };
      });
      releases.push(this.models.offerFilesTo(siteId, models.map((m) => ({ sha256: m.ref.sha256, bytes: m.data.length, data: m.data })), DEFAULT_CHUNK_BYTES));
      asked.set(siteId, models.map(({ id, member, ref }) => ({ id, member, ref })));
    }
    return asked;
  }

  private async signatureProblem(siteId: string, bytes: Uint8Array, signature: string): Promise<string | null> {
    const site = await this.store.getSite(siteId);
    if (!site?.signPublicKey) return 'no signing key is enrolled for the site';
    return verify(bytes, fromBase64(signature), fromBase64(site.signPublicKey)) ? null : 'the signature does not verify with the enrolled signing key';
  }
}

/** A reading without its undefined fields. */
function clean(r: { calibration?: ModelCalibration; review?: ReviewRule }): ModelReading {
  return { ...(r.calibration ? { calibration: r.calibration } : {}), ...(r.review ? { review: r.review } : {}) };
}

function roundBin<B extends { confidence: number | null; accuracy: number | null }>(b: B): B {
  return { ...b, confidence: round6(b.confidence), accuracy: round6(b.accuracy) };
}

/** The protocol's bins are libs/ml's (a compile error otherwise). */
export type CalibrationBinsAgree = Expect<Equal<[typeof RELIABILITY_BINS, typeof ENTROPY_HISTOGRAM_BINS], [typeof CALIBRATION_RELIABILITY_BINS, typeof CALIBRATION_ENTROPY_BINS]>>;
