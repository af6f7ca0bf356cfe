import { createHash } from 'node:crypto';
import { LabeledImages, ModelSpec, StainNormalizationTarget, WeightSet, decodeWeights } from '@histofed/fl-core';
import {
  LogisticHead,
  OutputLayout,
  applyTemperature,
  buildModelAsync,
  entropyHistogram,
  evaluateModelAsync,
  perImage,
  reliabilityCounts,
  setWeights,
  stackingGradient,
  temperatureNll,
  weightedMeanNll,
} from '@histofed/ml';
import {
  BlobRef,
  CalibrationEvents,
  CalibrationModelId,
  CalibrationNllAck,
  CalibrationNllReport,
  CalibrationReviewAck,
  CalibrationReviewReport,
  CalibrationTemperatures,
  EnsembleFitEvents,
  EnsembleStackingGradientAck,
  EnsembleStackingGradientReport,
  EnsembleWeightsNllAck,
  EnsembleWeightsNllReport,
  SiteSigner,
  calibrationNllRequestSchema,
  calibrationNllSignedBytes,
  calibrationReviewRequestSchema,
  calibrationReviewSignedBytes,
  ensembleStackingGradientReportSchema,
  ensembleStackingGradientRequestSchema,
  ensembleStackingGradientSignedBytes,
  ensembleWeightsNllRequestSchema,
  ensembleWeightsNllSignedBytes,
  refusal,
  validateMessage,
} from '@histofed/protocol';
import { toBase64 } from '@histofed/crypto';
import type { Outbox } from './outbox';
import type { SiteData } from './site-data';
import type { SiteLogger } from './site-logger';

/** A model's image-level outputs on the site's validation images (they never leave the site). */
export interface ValidationOutputs {
  /** images x (stage-1 classes + subtypes), the mean of each image's tile rows. */
  readonly rows: Float32Array;
  readonly labels: Int32Array;
  /** Subtype indices (-1 unknown) of a two-stage model's images, when the data has them. */
  readonly subtypes?: Int32Array;
  readonly layout: OutputLayout;
}

/** Runs `weights` (a model of `spec`) over already loaded validation inputs. */
export async function validationOutputs(spec: ModelSpec, weights: WeightSet, validation: LabeledImages, backboneDir?: string): Promise<ValidationOutputs> {
  if (validation.count === 0) throw new Error('the site has no validation images');
  const layout: OutputLayout = { numClasses: spec.numClasses, ...(spec.subtypeParents?.length ? { subtypeParents: spec.subtypeParents } : {}) };
  const model = await buildModelAsync(spec, 1, { dir: backboneDir });
  try {
    setWeights(model, weights);
    const { probabilities } = await evaluateModelAsync(model, validation, { subtypeParents: layout.subtypeParents });
    const { data } = perImage(validation, probabilities, layout);
    return { rows: probabilities, labels: data.labels, ...(layout.subtypeParents && data.subtypes ? { subtypes: data.subtypes } : {}), layout };
  } finally {
    model.dispose();
  }
}

/** The stage-1 block of output rows. */
function stage1Of(o: ValidationOutputs, rows: Float32Array = o.rows): Float32Array {
  const k = o.layout.numClasses;
  const width = k + (o.layout.subtypeParents?.length ?? 0);
  if (width === k) return rows;
  const n = rows.length / width;
  const out = new Float32Array(n * k);
  for (let i = 0; i < n; i++) out.set(rows.subarray(i * width, i * width + k), i * k);
  return out;
}

/**
 * The numbers of the first question (coordinator:calibration-nll) for one model: the summed stage-1
 * (and subtype) NLL over the temperature grid, the counts, and the stage-1 reliability counts.
 */
export function nllReport(id: CalibrationModelId, sha256: string, o: ValidationOutputs, grid: readonly number[]): CalibrationNllReport {
  const stage1 = temperatureNll(o.rows, o.labels, o.layout, 'stage1', grid);
  const subtype = o.subtypes && o.subtypes.some((s) => s >= 0) ? temperatureNll(o.rows, o.subtypes, o.layout, 'subtype', grid) : undefined;
  return {
    id,
    sha256,
    images: o.labels.length,
    stage1: { nll: [...stage1.nll], count: stage1.count },
    ...(subtype ? { subtype: { nll: [...subtype.nll], count: subtype.count } } : {}),
    reliability: reliabilityCounts(stage1Of(o), o.labels, o.layout.numClasses),
  };
}

/**
 * The numbers of the second question (coordinator:calibration-review) for one model, calibrated with
 * `t`: the stage-1 reliability counts and the predictive-entropy histogram with the wrong predictions.
 */
export function reviewReport(id: CalibrationModelId, sha256: string, o: ValidationOutputs, t: CalibrationTemperatures): CalibrationReviewReport {
  const calibrated = stage1Of(o, applyTemperature(o.rows, o.layout, t));
  const k = o.layout.numClasses;
  return {
    id,
    sha256,
    images: o.labels.length,
    reliability: reliabilityCounts(calibrated, o.labels, k),
    entropy: entropyHistogram(calibrated, o.labels, k),
  };
}

/**
 * The numbers of the ensemble weighting question (coordinator:ensemble-weights-nll, issue 16): for
 * each candidate weighting of the members (`outputs`, in the request's order, each with its
 * manifest's temperature), the summed stage-1 NLL of the validation images under the weighted mean
 * of the calibrated probabilities, and the images counted.
 */
export function weightingReport(
  members: readonly { sha256: string; outputs: ValidationOutputs; temperature?: CalibrationTemperatures }[],
  candidates: readonly (readonly number[])[],
): EnsembleWeightsNllReport {
  const first = members[0].outputs;
  members.forEach((m, i) => {
    if (m.outputs.labels.length !== first.labels.length) throw new Error(`member ${i} was run on ${m.outputs.labels.length} images, member 0 on ${first.labels.length}`);
  });
  const rows = members.map((m) => (m.temperature ? applyTemperature(m.outputs.rows, m.outputs.layout, m.temperature) : m.outputs.rows));
  const { nll, count } = weightedMeanNll(rows, first.labels, first.layout, candidates, 'stage1');
  return { members: members.map((m) => m.sha256), nll: [...nll], count };
}

/** The members' calibrated output rows on the validation images, in the request's order: what a stacking fit's gradients are computed from. */
export interface StackingInputs {
  readonly rows: readonly Float32Array[];
  readonly labels: Int32Array;
  readonly subtypes?: Int32Array;
  readonly layout: OutputLayout;
}

/** The members' outputs (each with its manifest's temperature applied) as one stacking input. */
export function stackingInputs(members: readonly { outputs: ValidationOutputs; temperature?: CalibrationTemperatures }[]): StackingInputs {
  const first = members[0].outputs;
  members.forEach((m, i) => {
    if (m.outputs.labels.length !== first.labels.length) throw new Error(`member ${i} was run on ${m.outputs.labels.length} images, member 0 on ${first.labels.length}`);
  });
  const rows = members.map((m) => (m.temperature ? applyTemperature(m.outputs.rows, m.outputs.layout, m.temperature) : m.outputs.rows));
  return { rows, labels: first.labels, ...(first.subtypes ? { subtypes: first.subtypes } : {}), layout: first.layout };
}

/**
 * The numbers of the stacking question (coordinator:ensemble-stacking-gradient, issue 16): the
 * summed NLL of the validation images under the logistic head `params` on the members'
 * log-probabilities, the images counted (for the subtype head: those with a subtype label), and the
 * NLL's gradient with respect to the head's parameters (libs/ml stackingGradient: sums over images).
 */
export function stackingReport(
  memberShas: readonly string[],
  inputs: StackingInputs,
  head: 'stage1' | 'subtype',
  params: LogisticHead,
): EnsembleStackingGradientReport {
  const labels = head === 'stage1' ? inputs.labels : inputs.subtypes;
  if (!labels) throw new Error('the validation images have no subtype labels');
  const g = stackingGradient(inputs.rows, labels, inputs.layout, params, head);
  if (g.count === 0) throw new Error(`no validation image has a ${head === 'stage1' ? 'class' : 'subtype'} label`);
  return { members: [...memberShas], head, nll: g.nll, count: g.count, coefficients: g.coefficients, intercept: g.intercept };
}

/**
 * What the outbox keeps of a stacking answer: a fit asks 150-1000 of them per head, each with
 * classes x members·classes gradient numbers (576 for 8 subtypes of 9 members), which would make
 * the stacking answers most of the log. Kept per answer (recorded before it leaves, as every
 * message): the run, step, site, members, head, count, NLL and signature in full, the gradient as
 * its size, its largest magnitude and the SHA-256 of the signed bytes (which hold every number of
 * the answer: whoever has the answer can check it against this line and the signature).
 */
export function stackingOutboxRecord(runId: string, step: number, siteId: string, report: EnsembleStackingGradientReport, signedBytes: Uint8Array, signature: string): Record<string, unknown> {
  const numbers = [...report.coefficients.flat(), ...report.intercept];
  const maxAbs = numbers.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  return {
    runId,
    step,
    ok: true,
    siteId,
    report: {
      members: report.members,
      head: report.head,
      nll: report.nll,
      count: report.count,
      gradient: { numbers: numbers.length, maxAbs, signedBytesSha256: createHash('sha256').update(signedBytes).digest('hex') },
    },
    signature,
  };
}

/** Fetches an offered model's bytes (site:fetch-chunk), SHA-256 checked. */
export type ModelFetcher = (ref: BlobRef, what: string) => Promise<Uint8Array>;

/** Outputs kept between the questions (a run's models at most: global, personalized and up to 8 snapshots; the oldest go first). */
const MAX_KEPT_OUTPUTS = 12;

/**
 * The site's side of the federated calibration (issue 15): answers the coordinator's two questions
 * about the run's models it holds, from its validation images. The models come from the
 * coordinator (the very weights the run exports); their outputs stay in memory between the two
 * questions. Every answer is signed and recorded in the outbox as sent; a request that fails
 * validation, or a model the site cannot run, is refused with the reason.
 */
export class SiteCalibration {
  private readonly outputs = new Map<string, Promise<ValidationOutputs>>();
  /** The current stacking fit's inputs (one fit at a time: the ~150-300 questions of a fit cost only the gradient). */
  private stacking: { readonly key: string; readonly inputs: Promise<StackingInputs> } | null = null;

  constructor(
    private readonly siteId: string,
    private readonly data: SiteData,
    private readonly signer: SiteSigner,
    private readonly outbox: Outbox,
    private readonly logger: SiteLogger,
    private readonly fetchModel: ModelFetcher,
  ) {}

  async answerNll(raw: unknown): Promise<CalibrationNllAck> {
    const v = validateMessage(calibrationNllRequestSchema, raw, CalibrationEvents.nll);
    if (!v.ok) return refusal(v.reason, 'invalid-message');
    const r = v.value;
    try {
      const models: CalibrationNllReport[] = [];
      for (const m of r.models) models.push(nllReport(m.id, m.model.sha256, await this.outputsOf(r.runId, r.model, r.stainNormalization, m.id, m.model), r.grid));
      const answer = { ok: true as const, siteId: this.siteId, models, signature: toBase64(this.signer.sign(calibrationNllSignedBytes(r.runId, this.siteId, models))) };
      await this.outbox.record(CalibrationEvents.nll, { runId: r.runId, ...answer });
      this.logger.event('info', 'calibration likelihoods sent', { runId: r.runId, models: models.map((m) => ({ id: m.id, images: m.images })), temperatures: r.grid.length });
      return answer;
    } catch (e) {
      return this.failed(r.runId, CalibrationEvents.nll, e);
    }
  }

  async answerReview(raw: unknown): Promise<CalibrationReviewAck> {
    const v = validateMessage(calibrationReviewRequestSchema, raw, CalibrationEvents.review);
    if (!v.ok) return refusal(v.reason, 'invalid-message');
    const r = v.value;
    try {
      const models: CalibrationReviewReport[] = [];
      for (const m of r.models) {
        models.push(reviewReport(m.id, m.model.sha256, await this.outputsOf(r.runId, r.model, r.stainNormalization, m.id, m.model), m.temperature));
      }
      const answer = { ok: true as const, siteId: this.siteId, models, signature: toBase64(this.signer.sign(calibrationReviewSignedBytes(r.runId, this.siteId, models))) };
      await this.outbox.record(CalibrationEvents.review, { runId: r.runId, ...answer });
      this.logger.event('info', 'calibration review statistics sent', { runId: r.runId, models: r.models.map((m) => ({ id: m.id, temperature: m.temperature })) });
      return answer;
    } catch (e) {
      return this.failed(r.runId, CalibrationEvents.review, e);
    }
  }

  /** The ensemble weighting question (issue 16): numbers only, signed, recorded in the outbox. */
  async answerWeights(raw: unknown): Promise<EnsembleWeightsNllAck> {
    const v = validateMessage(ensembleWeightsNllRequestSchema, raw, EnsembleFitEvents.nll);
    if (!v.ok) return refusal(v.reason, 'invalid-message');
    const r = v.value;
    try {
      const members: { sha256: string; outputs: ValidationOutputs; temperature?: CalibrationTemperatures }[] = [];
      for (const m of r.members) {
        members.push({ sha256: m.model.sha256, outputs: await this.outputsOf(r.runId, r.model, r.stainNormalization, m.id, m.model), ...(m.temperature ? { temperature: m.temperature } : {}) });
      }
      const report = weightingReport(members, r.candidates);
      const answer = { ok: true as const, siteId: this.siteId, report, signature: toBase64(this.signer.sign(ensembleWeightsNllSignedBytes(r.runId, this.siteId, report))) };
      await this.outbox.record(EnsembleFitEvents.nll, { runId: r.runId, ...answer });
      this.logger.event('info', 'ensemble weighting likelihoods sent', { runId: r.runId, members: r.members.map((m) => m.id), candidates: r.candidates.length, images: report.count });
      return answer;
    } catch (e) {
      return this.failed(r.runId, EnsembleFitEvents.nll, e);
    }
  }

  /**
   * One step of the stacking meta-learner's fit (issue 16): the summed NLL and its gradient for the
   * head's current parameters, numbers only, signed, recorded in the outbox (compactly, see
   * stackingOutboxRecord). The members' calibrated outputs are computed once per fit.
   */
  async answerStacking(raw: unknown): Promise<EnsembleStackingGradientAck> {
    const v = validateMessage(ensembleStackingGradientRequestSchema, raw, EnsembleFitEvents.stacking);
    if (!v.ok) return refusal(v.reason, 'invalid-message');
    const r = v.value;
    try {
      const inputs = await this.stackingInputsOf(r);
      const report = stackingReport(r.members.map((m) => m.model.sha256), inputs, r.head, r.params);
      const checked = ensembleStackingGradientReportSchema.safeParse(report);
      if (!checked.success) throw new Error(`the numbers are out of bounds: ${checked.error.issues[0]?.path.join('.')}: ${checked.error.issues[0]?.message}`);
      const bytes = ensembleStackingGradientSignedBytes(r.runId, this.siteId, report);
      const answer = { ok: true as const, siteId: this.siteId, report, signature: toBase64(this.signer.sign(bytes)) };
      await this.outbox.record(EnsembleFitEvents.stacking, stackingOutboxRecord(r.runId, r.step, this.siteId, report, bytes, answer.signature));
      if (r.step === 1) this.logger.event('info', 'ensemble stacking gradients: fit started', { runId: r.runId, head: r.head, members: r.members.map((m) => m.id), images: report.count });
      return answer;
    } catch (e) {
      return this.failed(r.runId, EnsembleFitEvents.stacking, e);
    }
  }

  private stackingInputsOf(r: {
    runId: string;
    model: ModelSpec;
    stainNormalization: unknown;
    members: readonly { id: string; model: BlobRef; temperature?: CalibrationTemperatures }[];
  }): Promise<StackingInputs> {
    const key = JSON.stringify([r.runId, r.model, r.stainNormalization, r.members.map((m) => [m.model.sha256, m.temperature ?? null])]);
    if (this.stacking?.key !== key) {
      const inputs = (async () => {
        const members: { outputs: ValidationOutputs; temperature?: CalibrationTemperatures }[] = [];
        for (const m of r.members) {
          members.push({ outputs: await this.outputsOf(r.runId, r.model, r.stainNormalization, m.id, m.model), ...(m.temperature ? { temperature: m.temperature } : {}) });
        }
        return stackingInputs(members);
      })();
      const entry = { key, inputs };
      this.stacking = entry;
      inputs.catch(() => {
        if (this.stacking === entry) this.stacking = null;
      });
    }
    return this.stacking!.inputs;
  }

  private failed(runId: string, event: string, e: unknown): { ok: false; error: string; code: 'internal-error' } {
    const error = (e as Error).message;
    const what =
      event === EnsembleFitEvents.nll ? 'ensemble weighting question' : event === EnsembleFitEvents.stacking ? 'ensemble stacking question' : 'calibration question';
    this.logger.event('warn', `${what} not answered`, { runId, event, error });
    return { ok: false, error: `${event} at site ${this.siteId}: ${error}`.slice(0, 2000), code: 'internal-error' };
  }

  /** The model's validation outputs: computed once per run and model (fetched from the coordinator). */
  private outputsOf(runId: string, spec: ModelSpec, stain: unknown, id: CalibrationModelId | string, ref: BlobRef): Promise<ValidationOutputs> {
    const key = JSON.stringify([runId, ref.sha256, spec, stain]);
    let p = this.outputs.get(key);
    if (!p) {
      p = (async () => {
        const weights = decodeWeights(await this.fetchModel(ref, `${id} model ${ref.sha256.slice(0, 12)} (run ${runId}, calibration)`), `${id} model`);
        const validation = await this.data.validation({ spec, stain: stain as StainNormalizationTarget | null });
        return validationOutputs(spec, weights, validation, this.data.backboneDir);
      })();
      this.outputs.set(key, p);
      p.catch(() => this.outputs.delete(key));
      while (this.outputs.size > MAX_KEPT_OUTPUTS) this.outputs.delete(this.outputs.keys().next().value as string);
    }
    return p;
  }
}
