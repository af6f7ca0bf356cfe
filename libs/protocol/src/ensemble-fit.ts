import { z } from 'zod';
import { signedBytes } from '@histofed/fl-core';
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
} as const;

/** Most members a weighting may weigh (the final global model and at most 8 snapshots, with room). */
export const ENSEMBLE_FIT_MAX_MEMBERS = 16;
/** Most candidate weightings a request may list (libs/ml weightingCandidates caps at 300). */
export const ENSEMBLE_FIT_MAX_CANDIDATES = 512;
/** Highest summed NLL per image a site can report: -log of libs/ml's 1e-12 probability floor (27.63...), rounded up. */
export const ENSEMBLE_FIT_MAX_NLL_PER_IMAGE = 28;

/** A member every site holds: the final global model or an earlier round's ('global-r<round>'). */
export const ensembleFitMemberIdSchema = z.string().regex(/^global(-r[1-9][0-9]{0,5})?$/, "a member every site holds: 'global' or 'global-r<round>'");

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
