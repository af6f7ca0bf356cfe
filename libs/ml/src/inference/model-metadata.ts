/**
 * What a saved model (or ensemble) says about how to read its outputs, beyond its weights (issue 15):
 * - `calibration`: temperature scaling of each head's image-level probabilities, p -> softmax(log p / T),
 *   fitted after training (federatedly: the sites report negative log-likelihoods for a grid of
 *   temperatures, numbers only);
 * - `review`: the rule that flags an image for a second look — an uncertainty measure and the
 *   threshold chosen on validation data for a target review rate.
 * Both are optional: a model without them is read uncalibrated (T = 1) and flags nothing.
 */
import { z } from 'zod';

/** Highest temperature accepted in a manifest (a softmax at T = 100 is flat for any useful model). */
export const MAX_TEMPERATURE = 100;

const temperature = z.number().finite().positive().max(MAX_TEMPERATURE);

export const calibrationSchema = z
  .object({
    method: z.literal('temperature'),
    /** Stage-1 head. */
    stage1: temperature,
    /** Subtype head of a two-stage model. */
    subtype: temperature.optional(),
    /** How it was fitted, e.g. "federated: 3 sites, 84 validation images, grid 0.5..5". */
    fittedOn: z.string().min(1).max(500),
    /** Stage-1 expected calibration error (10 bins) on the fitting data, before and after. */
    eceBefore: z.number().min(0).max(1).optional(),
    eceAfter: z.number().min(0).max(1).optional(),
  })
  .strict();
export type ModelCalibration = z.infer<typeof calibrationSchema>;

/** The per-image uncertainty measures a review rule may use (higher = more uncertain). */
export const UNCERTAINTY_MEASURES = [
  /** Normalized predictive entropy of the (calibrated) stage-1 probabilities, in [0, 1]. */
  'entropy',
  /** 1 - the (calibrated) stage-1 probability of the predicted class. */
  'oneMinusConfidence',
  /** Fraction of the image's tiles whose stage-1 class differs from the image's. */
  'tileDisagreement',
  /** Ensemble: mutual information between the prediction and the member (stage 1). */
  'memberMutualInformation',
  /** MC dropout: mutual information between the prediction and the dropout mask (stage 1). */
  'mcDropoutMutualInformation',
] as const;
export type UncertaintyMeasure = (typeof UNCERTAINTY_MEASURES)[number];

export const reviewRuleSchema = z
  .object({
    measure: z.enum(UNCERTAINTY_MEASURES),
    /** An image is flagged when its measure is >= threshold. */
    threshold: z.number().finite(),
    /** The share of validation images the threshold flags (what it was chosen for). */
    targetReviewRate: z.number().min(0).max(1),
    /** Where it was chosen, e.g. "pooled validation patients of 3 sites, 84 images". */
    chosenOn: z.string().min(1).max(500),
    /** MC dropout passes the measure needs (mcDropoutMutualInformation only). */
    mcDropoutPasses: z.number().int().min(2).max(256).optional(),
  })
  .strict();
export type ReviewRule = z.infer<typeof reviewRuleSchema>;

/** The optional reading instructions a model or ensemble manifest carries. */
export interface ModelReading {
  readonly calibration?: ModelCalibration;
  readonly review?: ReviewRule;
}
