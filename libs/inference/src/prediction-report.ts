/**
 * The result of a prediction run (`histofed-site predict --json`, `POST /api/predict`): one schema,
 * TypeScript types derived from it, so the CLI, the endpoint and the tests read the same contract.
 */
import { z } from 'zod';
import { calibrationSchema, reviewRuleSchema } from '@histofed/ml';

const probability = z.number().min(0).max(1);
const classAndProbability = z.object({ class: z.string(), probability }).strict();

export const uncertaintySchema = z
  .object({
    /** Normalized predictive entropy of the (calibrated) stage-1 probabilities, in [0, 1]. */
    entropy: z.number(),
    /** 1 - the stage-1 probability of the predicted class. */
    oneMinusConfidence: z.number(),
    /** Tiles read from the image (1 for a whole-image model). */
    tiles: z.number().int().min(1),
    /** Share of tiles whose stage-1 class differs from the image's (0 for a single tile). */
    tileDisagreement: z.number(),
    /** Ensembles: mutual information between prediction and member, and the members' variance of P(malignant). */
    memberMutualInformation: z.number().optional(),
    memberVariance: z.number().optional(),
    /** MC dropout (when run): passes, mutual information and the variance of P(malignant) over the passes. */
    mcDropoutPasses: z.number().int().optional(),
    mcDropoutMutualInformation: z.number().optional(),
    mcDropoutVariance: z.number().optional(),
  })
  .strict();

export const weightedTileSchema = z
  .object({ x: z.number().int().min(0), y: z.number().int().min(0), width: z.number().int().min(1), height: z.number().int().min(1), weight: probability })
  .strict();

export const imagePredictionSchema = z
  .object({
    file: z.string(),
    patient: z.string().nullable(),
    stage1: classAndProbability.extend({ probabilities: z.record(z.string(), probability) }).strict(),
    /** Two-stage models: the cascade subtype (among the predicted class's subtypes) and P(subtype | class). */
    subtype: classAndProbability.nullable(),
    uncertainty: uncertaintySchema,
    /**
     * Bag models (attention-mil, transformer-mil): the tiles that weighed most in the prediction,
     * heaviest first, in pixels of the original image; weights sum to 1 over all the image's tiles.
     */
    topTiles: z.array(weightedTileSchema).optional(),
    /** With --heatmap DIR: the attention heat map written for this image. */
    heatmap: z.string().optional(),
    /** Fusion models (model.clinical): whether the image's patient had a row in --clinical (false: the no-record path). */
    clinicalRecord: z.boolean().optional(),
    review: z.boolean(),
    reason: z.string(),
  })
  .strict();

export const patientPredictionSchema = z
  .object({
    patient: z.string(),
    images: z.number().int().min(1),
    /** Mean of the images' (calibrated) probabilities. */
    stage1: classAndProbability.extend({ probabilities: z.record(z.string(), probability) }).strict(),
    subtype: classAndProbability.nullable(),
    flaggedImages: z.number().int().min(0),
    review: z.boolean(),
    reason: z.string(),
  })
  .strict();

export const predictionFailureSchema = z.object({ file: z.string(), reason: z.string() }).strict();

export const predictionModelSchema = z
  .object({
    path: z.string(),
    kind: z.enum(['model', 'ensemble']),
    members: z.array(z.string()),
    classes: z.array(z.string()),
    subtypeClasses: z.array(z.string()).nullable(),
    calibration: calibrationSchema.nullable(),
    /** Per member, its own temperature when it has one (applied before averaging). */
    memberCalibration: z.record(z.string(), calibrationSchema),
    reviewRule: reviewRuleSchema.nullable(),
    /** An ensemble's combiner (histofed-ensemble.json `combine`; issue 16); absent in older reports. */
    combine: z.enum(['mean-probabilities', 'weighted-mean', 'stacking']).optional(),
    /** Fusion models: the clinical columns the model reads, and the table given (--clinical), or null. */
    clinical: z.object({ columns: z.array(z.string()), table: z.string().nullable() }).strict().optional(),
  })
  .strict();

export const predictionReportSchema = z
  .object({
    model: predictionModelSchema,
    images: z.array(imagePredictionSchema),
    patients: z.array(patientPredictionSchema),
    failures: z.array(predictionFailureSchema),
    summary: z
      .object({
        images: z.number().int(),
        failed: z.number().int(),
        flagged: z.number().int(),
        seconds: z.number(),
        imagesPerSecond: z.number().nullable(),
      })
      .strict(),
  })
  .strict();

export type Uncertainty = z.infer<typeof uncertaintySchema>;
export type ImagePrediction = z.infer<typeof imagePredictionSchema>;
export type PatientPrediction = z.infer<typeof patientPredictionSchema>;
export type FailedFile = z.infer<typeof predictionFailureSchema>;
export type PredictionModel = z.infer<typeof predictionModelSchema>;
export type PredictionReport = z.infer<typeof predictionReportSchema>;
