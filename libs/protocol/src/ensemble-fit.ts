import { z } from 'zod';
import { SHARED_ENSEMBLE_MEMBER_PATTERN, signedBytes } from '@histofed/fl-core';
import { blobRefSchema, sha256HexSchema } from './chunk-schemas';
import { CALIBRATION_MAX_IMAGES, calibrationTemperaturesSchema } from './calibration';
import { refusalSchema } from './refusals';
import { modelSpecSchema, siteIdSchema, signatureSchema, stainNormalizationSchema } from './schemas';

/**
 * The ensemble's weighted mean, fitted federatedly after the calibration (issue 16): the
 * coordinator sends each participating site the ensemble members every site holds (the final global
 * model 'global' and the snapshots 'global-r<round>'; fetched like a round's model, SHA-256 checked),
 * each with the temperature its manifest carries, and a list of candidate weightings; the site
 * answers, for each candidate, the summed stage-1 negative log-likelihood of its validation images
 * under the weighted mean of the members' calibrated probabilities, and the images counted.
 *
 *   coordinator:ensemble-weights-nll
 *
 * Numbers only, in an array as long as the candidate list, signed with the site's identity key: no
 * image, file name, per-image probability or label leaves the site.
 */
export const EnsembleFitEvents = {
  nll: 'coordinator:ensemble-weights-nll',
  /** The stacking meta-learner's fit (below): one question per gradient step. */
  stacking: 'coordinator:ensemble-stacking-gradient',
} as const;

/** Most members a weighting may weigh (the final global model and at most 8 snapshots, with room). */
export const ENSEMBLE_FIT_MAX_MEMBERS = 16;
/** Most candidate weightings a request may list (libs/ml weightingCandidates caps at 300). */
export const ENSEMBLE_FIT_MAX_CANDIDATES = 512;
/** Highest summed NLL per image a site can report: -log of libs/ml's 1e-12 probability floor (27.63...), rounded up. */
export const ENSEMBLE_FIT_MAX_NLL_PER_IMAGE = 28;

/** A member every site holds: the final global model, an earlier round's ('global-r<round>') or a boosted one ('global-b<k>'). */
export const ensembleFitMemberIdSchema = z.string().regex(SHARED_ENSEMBLE_MEMBER_PATTERN, "a member every site holds: 'global', 'global-r<round>' or 'global-b<k>'");

const weightSchema = z.number().finite().min(0).max(1);

export const ensembleWeightsNllRequestSchema = z
  .object({
    runId: z.string().uuid(),
    model: modelSpecSchema,
    stainNormalization: stainNormalizationSchema.default(null),
    /** The members, in the order of each candidate's weights, with their manifests' temperatures (none: 1). */
    members: z
      .array(z.object({ id: ensembleFitMemberIdSchema, model: blobRefSchema, temperature: calibrationTemperaturesSchema.optional() }).strict())
      .min(2)
      .max(ENSEMBLE_FIT_MAX_MEMBERS)
      .refine((ms) => new Set(ms.map((m) => m.id)).size === ms.length, 'a member is listed twice'),
    /** Candidate weightings: one weight per member, each summing to 1. */
    candidates: z
      .array(z.array(weightSchema).refine((w) => Math.abs(w.reduce((a, b) => a + b, 0) - 1) <= 1e-6, 'a candidate\'s weights must sum to 1'))
      .min(1)
      .max(ENSEMBLE_FIT_MAX_CANDIDATES),
  })
  .strict()
  .refine((r) => r.candidates.every((c) => c.length === r.members.length), { message: 'every candidate has one weight per member', path: ['candidates'] });
export type EnsembleWeightsNllRequest = z.infer<typeof ensembleWeightsNllRequestSchema>;

export const ensembleWeightsNllReportSchema = z
  .object({
    /** The members the numbers are about (their blobs' SHA-256), in the request's order. */
    members: z.array(sha256HexSchema).min(2).max(ENSEMBLE_FIT_MAX_MEMBERS),
    /** Summed stage-1 NLL of the validation images for each candidate, in the request's order. */
    nll: z.array(z.number().finite().min(0)).min(1).max(ENSEMBLE_FIT_MAX_CANDIDATES),
    /** Validation images counted. */
    count: z.number().int().min(1).max(CALIBRATION_MAX_IMAGES),
  })
  .strict();
export type EnsembleWeightsNllReport = z.infer<typeof ensembleWeightsNllReportSchema>;

export const ensembleWeightsNllAckSchema = z.discriminatedUnion('ok', [
  z
    .object({
      ok: z.literal(true),
      siteId: siteIdSchema,
      report: ensembleWeightsNllReportSchema,
      /** Ed25519 signature over ensembleWeightsNllSignedBytes by the site's identity key. */
      signature: signatureSchema,
    })
    .strict(),
  refusalSchema.extend({ error: z.string().max(2000) }),
]);
export type EnsembleWeightsNllAck = z.infer<typeof ensembleWeightsNllAckSchema>;

/** The bytes a site signs for its answer: run, site, then every number of the report in a fixed order. */
export function ensembleWeightsNllSignedBytes(runId: string, siteId: string, report: EnsembleWeightsNllReport): Uint8Array {
  return signedBytes('histofed-ensemble-weights-nll-v1', [runId, siteId, report.members.length, ...report.members, report.count, report.nll.length, ...report.nll]);
}

// ---- stacking -------------------------------------------------------------------------------

/**
 * The ensemble's stacking meta-learner, fitted federatedly (issue 16, run option ensemble.combiner
 * 'stacking'): a multinomial logistic regression on the members' log-probabilities (libs/ml
 * stackingGradient), one head per stage. For each gradient step the coordinator sends every
 * participating site the same members as for the weighting (with their temperatures), the head
 * ('stage1' or 'subtype') and its current parameters; the site answers the summed NLL of its
 * validation images under that head, the images counted, and the NLL's gradient with respect to
 * the head's parameters (sums over its images, so the sites' answers add up to the pooled
 * gradient).
 *
 *   coordinator:ensemble-stacking-gradient
 *
 * Numbers only, in arrays whose sizes the request fixes (classes x members·classes), signed with the
 * site's identity key: no image, file name, per-image probability or label leaves the site.
 */
export const STACKING_HEADS = ['stage1', 'subtype'] as const;
export type StackingHeadName = (typeof STACKING_HEADS)[number];

/** Most classes a stacked head may have (a head is classes x members·classes coefficients: 64 x 16·64 at most). */
export const ENSEMBLE_STACKING_MAX_CLASSES = 64;
/** Most gradient steps of one head's fit (run config ensemble.stackingIterations, plus the final evaluation). */
export const ENSEMBLE_STACKING_MAX_STEPS = 1001;
/** Largest magnitude of a head's parameter (Adam moves each by at most about its step size, 0.05, per step). */
export const ENSEMBLE_STACKING_MAX_PARAM = 1000;
/**
 * Largest magnitude of a feature, -log of libs/ml's STACKING_EPS = 1e-6 (13.8155...), rounded up:
 * per image the coefficients' gradient is at most this, the intercepts' at most 1 (p - onehot).
 */
export const ENSEMBLE_STACKING_MAX_FEATURE = 14;
/** Highest NLL per image a site can report: -log of stackingGradient's 1e-300 probability floor (690.78), rounded up. */
export const ENSEMBLE_STACKING_MAX_NLL_PER_IMAGE = 691;

const stackingParam = z.number().finite().min(-ENSEMBLE_STACKING_MAX_PARAM).max(ENSEMBLE_STACKING_MAX_PARAM);
const gradientValue = z
  .number()
  .finite()
  .min(-ENSEMBLE_STACKING_MAX_FEATURE * CALIBRATION_MAX_IMAGES)
  .max(ENSEMBLE_STACKING_MAX_FEATURE * CALIBRATION_MAX_IMAGES);
const MAX_FEATURES = ENSEMBLE_FIT_MAX_MEMBERS * ENSEMBLE_STACKING_MAX_CLASSES;

/** A head's parameters or gradient: `rows` x `cols` coefficients and `rows` intercepts, of equal-length rows. */
function headShapeIssue(h: { coefficients: readonly (readonly number[])[]; intercept: readonly number[] }): string | null {
  if (h.coefficients.length !== h.intercept.length) return `${h.coefficients.length} coefficient rows for ${h.intercept.length} intercepts`;
  const cols = h.coefficients[0]?.length ?? 0;
  if (h.coefficients.some((r) => r.length !== cols)) return 'coefficient rows of different lengths';
  return null;
}

/** The current parameters of the head being fitted (libs/ml LogisticHead), bounded. */
export const stackingHeadParamsSchema = z
  .object({
    coefficients: z.array(z.array(stackingParam).min(2).max(MAX_FEATURES)).min(2).max(ENSEMBLE_STACKING_MAX_CLASSES),
    intercept: z.array(stackingParam).min(2).max(ENSEMBLE_STACKING_MAX_CLASSES),
  })
  .strict()
  .superRefine((h, ctx) => {
    const issue = headShapeIssue(h);
    if (issue) ctx.addIssue({ code: 'custom', message: issue, path: ['coefficients'] });
  });
export type StackingHeadParams = z.infer<typeof stackingHeadParamsSchema>;

/** The classes of `head` for a model: stage 1's, or the subtypes (0: the model has no subtype head). */
export function stackingHeadClasses(model: { numClasses: number; subtypeParents?: readonly number[] }, head: StackingHeadName): number {
  return head === 'stage1' ? model.numClasses : (model.subtypeParents?.length ?? 0);
}

export const ensembleStackingGradientRequestSchema = z
  .object({
    runId: z.string().uuid(),
    model: modelSpecSchema,
    stainNormalization: stainNormalizationSchema.default(null),
    /** The members, in the order of the coefficients' column blocks, with their manifests' temperatures (none: 1). */
    members: z
      .array(z.object({ id: ensembleFitMemberIdSchema, model: blobRefSchema, temperature: calibrationTemperaturesSchema.optional() }).strict())
      .min(1)
      .max(ENSEMBLE_FIT_MAX_MEMBERS)
      .refine((ms) => new Set(ms.map((m) => m.id)).size === ms.length, 'a member is listed twice'),
    head: z.enum(STACKING_HEADS),
    /** The fit's step (1 for the head's start), for the site's log. */
    step: z.number().int().min(1).max(ENSEMBLE_STACKING_MAX_STEPS),
    params: stackingHeadParamsSchema,
  })
  .strict()
  .superRefine((r, ctx) => {
    const k = stackingHeadClasses(r.model, r.head);
    if (k < 2) return void ctx.addIssue({ code: 'custom', message: 'the model has no subtype head', path: ['head'] });
    const cols = r.params.coefficients[0]?.length ?? 0;
    if (r.params.intercept.length !== k || cols !== r.members.length * k) {
      ctx.addIssue({
        code: 'custom',
        message: `the ${r.head} head of ${r.members.length} members of ${k} classes is ${k} x ${r.members.length * k}, not ${r.params.intercept.length} x ${cols}`,
        path: ['params'],
      });
    }
  });
export type EnsembleStackingGradientRequest = z.infer<typeof ensembleStackingGradientRequestSchema>;

export const ensembleStackingGradientReportSchema = z
  .object({
    /** The members the numbers are about (their blobs' SHA-256), in the request's order. */
    members: z.array(sha256HexSchema).min(1).max(ENSEMBLE_FIT_MAX_MEMBERS),
    head: z.enum(STACKING_HEADS),
    /** Summed NLL of the validation images counted under the request's head. */
    nll: z.number().finite().min(0).max(ENSEMBLE_STACKING_MAX_NLL_PER_IMAGE * CALIBRATION_MAX_IMAGES),
    /** Validation images counted (for the subtype head: those with a subtype label). */
    count: z.number().int().min(1).max(CALIBRATION_MAX_IMAGES),
    /** The summed NLL's gradient: classes x members·classes, then classes. */
    coefficients: z.array(z.array(gradientValue).min(2).max(MAX_FEATURES)).min(2).max(ENSEMBLE_STACKING_MAX_CLASSES),
    intercept: z.array(gradientValue).min(2).max(ENSEMBLE_STACKING_MAX_CLASSES),
  })
  .strict()
  .superRefine((r, ctx) => {
    const issue = headShapeIssue(r);
    if (issue) ctx.addIssue({ code: 'custom', message: issue, path: ['coefficients'] });
    else if (r.coefficients[0].length !== r.members.length * r.intercept.length) {
      ctx.addIssue({ code: 'custom', message: `${r.coefficients[0].length} coefficient columns for ${r.members.length} members of ${r.intercept.length} classes`, path: ['coefficients'] });
    }
  });
export type EnsembleStackingGradientReport = z.infer<typeof ensembleStackingGradientReportSchema>;

export const ensembleStackingGradientAckSchema = z.discriminatedUnion('ok', [
  z
    .object({
      ok: z.literal(true),
      siteId: siteIdSchema,
      report: ensembleStackingGradientReportSchema,
      /** Ed25519 signature over ensembleStackingGradientSignedBytes by the site's identity key. */
      signature: signatureSchema,
    })
    .strict(),
  refusalSchema.extend({ error: z.string().max(2000) }),
]);
export type EnsembleStackingGradientAck = z.infer<typeof ensembleStackingGradientAckSchema>;

/** The bytes a site signs for its answer: run, site, then every field of the report in a fixed order. */
export function ensembleStackingGradientSignedBytes(runId: string, siteId: string, report: EnsembleStackingGradientReport): Uint8Array {
  const cols = report.coefficients[0]?.length ?? 0;
  return signedBytes('histofed-ensemble-stacking-gradient-v1', [
    runId,
    siteId,
    report.members.length,
    ...report.members,
    report.head,
    report.count,
    report.nll,
    report.intercept.length,
    cols,
    ...report.coefficients.flat(),
    ...report.intercept,
  ]);
}
