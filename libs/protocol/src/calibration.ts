import { z } from 'zod';
import { signedBytes } from '@histofed/fl-core';
import { blobRefSchema, sha256HexSchema } from './chunk-schemas';
import { refusalSchema } from './refusals';
import { modelSpecSchema, siteIdSchema, signatureSchema, stainNormalizationSchema } from './schemas';

/**
 * Calibration and the review rule, fitted federatedly after the last round (issue 15). The
 * coordinator asks each participating site two questions about the models the run exports that
 * the site holds — the global model (with FedBN: with the site's own local tensors) and the site's
 * personalized model — which it fetches like a round's model (site:fetch-chunk, SHA-256 checked):
 *
 *   coordinator:calibration-nll     per model, the summed negative log-likelihood of the site's
 *                                   validation images for each temperature of a grid (stage 1, and
 *                                   the subtype head of a two-stage model), the counts, and the
 *                                   stage-1 reliability counts before calibration;
 *   coordinator:calibration-review  per model, calibrated with the temperatures the coordinator
 *                                   chose: the stage-1 reliability counts after calibration and a
 *                                   histogram of the predictive entropy with the wrong predictions
 *                                   per bin (the coordinator picks the review threshold from it).
 *
 * Numbers only, in fixed-size arrays, signed with the site's identity key: no image, file name,
 * per-image probability or label leaves the site.
 */
export const CalibrationEvents = {
  nll: 'coordinator:calibration-nll',
  review: 'coordinator:calibration-review',
} as const;

/** Most temperatures a grid may have. */
export const CALIBRATION_MAX_GRID = 64;
/** Highest temperature (libs/ml MAX_TEMPERATURE). */
export const CALIBRATION_MAX_TEMPERATURE = 100;
/** Stage-1 reliability bins of a report (libs/ml RELIABILITY_BINS). */
export const CALIBRATION_RELIABILITY_BINS = 10;
/** Normalized-entropy bins of a review histogram (libs/ml ENTROPY_HISTOGRAM_BINS). */
export const CALIBRATION_ENTROPY_BINS = 100;
/** Most validation images a report may count (a sanity bound, not a limit anyone meets). */
export const CALIBRATION_MAX_IMAGES = 10_000_000;

/** The models a site holds of a finished run: the global one (as the site uses it) and its own personalized one. */
export const CALIBRATION_MODEL_IDS = ['global', 'personalized'] as const;
export type CalibrationModelId = (typeof CALIBRATION_MODEL_IDS)[number];
const modelIdSchema = z.enum(CALIBRATION_MODEL_IDS);

const temperatureSchema = z.number().finite().positive().max(CALIBRATION_MAX_TEMPERATURE);
const countSchema = z.number().int().min(0).max(CALIBRATION_MAX_IMAGES);
const binCounts = (bins: number) => z.array(countSchema).length(bins);

/** Stage-1 reliability counts (libs/ml ReliabilityCounts): images, summed top probability, correct predictions per bin. */
export const reliabilityCountsSchema = z
  .object({
    counts: binCounts(CALIBRATION_RELIABILITY_BINS),
    confidenceSums: z.array(z.number().finite().min(0).max(CALIBRATION_MAX_IMAGES)).length(CALIBRATION_RELIABILITY_BINS),
    correct: binCounts(CALIBRATION_RELIABILITY_BINS),
  })
  .strict();
export type ReliabilityCountsWire = z.infer<typeof reliabilityCountsSchema>;

/** Normalized predictive entropy histogram (libs/ml EntropyHistogram): images and wrong predictions per bin. */
export const entropyHistogramSchema = z
  .object({
    counts: binCounts(CALIBRATION_ENTROPY_BINS),
    errors: binCounts(CALIBRATION_ENTROPY_BINS),
  })
  .strict();
export type EntropyHistogramWire = z.infer<typeof entropyHistogramSchema>;

/** Summed NLL for each temperature of the request's grid, and the images counted (libs/ml temperatureNll). */
export const headNllSchema = z
  .object({
    nll: z.array(z.number().finite().min(0)).min(1).max(CALIBRATION_MAX_GRID),
    count: countSchema,
  })
  .strict();
export type HeadNll = z.infer<typeof headNllSchema>;

const uniqueIds = <T extends { id: string }>(models: readonly T[]) => new Set(models.map((m) => m.id)).size === models.length;

/** What a request says about the site's validation inputs: the run's model spec and stain target. */
const requestBase = {
  runId: z.string().uuid(),
  model: modelSpecSchema,
  stainNormalization: stainNormalizationSchema.default(null),
};

export const calibrationNllRequestSchema = z
  .object({
    ...requestBase,
    grid: z.array(temperatureSchema).min(1).max(CALIBRATION_MAX_GRID),
    models: z
      .array(z.object({ id: modelIdSchema, model: blobRefSchema }).strict())
      .min(1)
      .max(CALIBRATION_MODEL_IDS.length)
      .refine(uniqueIds, 'a model is listed twice'),
  })
  .strict();
export type CalibrationNllRequest = z.infer<typeof calibrationNllRequestSchema>;

const modelAnswer = {
  id: modelIdSchema,
  /** The model the numbers are about (its blob's SHA-256). */
  sha256: sha256HexSchema,
  /** Validation images the model was run on. */
  images: z.number().int().min(1).max(CALIBRATION_MAX_IMAGES),
};

export const calibrationNllReportSchema = z
  .object({
    ...modelAnswer,
    stage1: headNllSchema,
    /** Two-stage models: the subtype head (images with a known subtype). */
    subtype: headNllSchema.optional(),
    /** Stage-1 reliability before calibration. */
    reliability: reliabilityCountsSchema,
  })
  .strict();
export type CalibrationNllReport = z.infer<typeof calibrationNllReportSchema>;

export const calibrationNllAckSchema = z.discriminatedUnion('ok', [
  z
    .object({
      ok: z.literal(true),
      siteId: siteIdSchema,
      models: z.array(calibrationNllReportSchema).min(1).max(CALIBRATION_MODEL_IDS.length),
      /** Ed25519 signature over calibrationNllSignedBytes by the site's identity key. */
      signature: signatureSchema,
    })
    .strict(),
  refusalSchema.extend({ error: z.string().max(2000) }),
]);
export type CalibrationNllAck = z.infer<typeof calibrationNllAckSchema>;

export const calibrationTemperaturesSchema = z.object({ stage1: temperatureSchema, subtype: temperatureSchema.optional() }).strict();
export type CalibrationTemperatures = z.infer<typeof calibrationTemperaturesSchema>;

export const calibrationReviewRequestSchema = z
  .object({
    ...requestBase,
    models: z
      .array(z.object({ id: modelIdSchema, model: blobRefSchema, temperature: calibrationTemperaturesSchema }).strict())
      .min(1)
      .max(CALIBRATION_MODEL_IDS.length)
      .refine(uniqueIds, 'a model is listed twice'),
  })
  .strict();
export type CalibrationReviewRequest = z.infer<typeof calibrationReviewRequestSchema>;

export const calibrationReviewReportSchema = z
  .object({
    ...modelAnswer,
    /** Stage-1 reliability after calibration (with the request's temperatures). */
    reliability: reliabilityCountsSchema,
    /** Calibrated stage-1 predictive entropy, with the wrong predictions per bin. */
    entropy: entropyHistogramSchema,
  })
  .strict();
export type CalibrationReviewReport = z.infer<typeof calibrationReviewReportSchema>;

export const calibrationReviewAckSchema = z.discriminatedUnion('ok', [
  z
    .object({
      ok: z.literal(true),
      siteId: siteIdSchema,
      models: z.array(calibrationReviewReportSchema).min(1).max(CALIBRATION_MODEL_IDS.length),
      /** Ed25519 signature over calibrationReviewSignedBytes by the site's identity key. */
      signature: signatureSchema,
    })
    .strict(),
  refusalSchema.extend({ error: z.string().max(2000) }),
]);
export type CalibrationReviewAck = z.infer<typeof calibrationReviewAckSchema>;

const reliabilityNumbers = (r: ReliabilityCountsWire) => [...r.counts, ...r.confidenceSums, ...r.correct];
const headNumbers = (h: HeadNll) => [h.count, h.nll.length, ...h.nll];

/** The bytes a site signs for its NLL answer: run, site, then every number of every model's report in a fixed order. */
export function calibrationNllSignedBytes(runId: string, siteId: string, models: readonly CalibrationNllReport[]): Uint8Array {
  return signedBytes('histofed-calibration-nll-v1', [
    runId,
    siteId,
    models.length,
    ...models.flatMap((m) => [m.id, m.sha256, m.images, ...headNumbers(m.stage1), m.subtype ? 1 : 0, ...(m.subtype ? headNumbers(m.subtype) : []), ...reliabilityNumbers(m.reliability)]),
  ]);
}

/** The bytes a site signs for its review answer. */
export function calibrationReviewSignedBytes(runId: string, siteId: string, models: readonly CalibrationReviewReport[]): Uint8Array {
  return signedBytes('histofed-calibration-review-v1', [
    runId,
    siteId,
    models.length,
    ...models.flatMap((m) => [m.id, m.sha256, m.images, ...reliabilityNumbers(m.reliability), ...m.entropy.counts, ...m.entropy.errors]),
  ]);
}
