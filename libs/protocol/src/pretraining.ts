import { z } from 'zod';

/**
 * Federated self-supervised pretraining (issue 19). A round of a run of kind 'pretrain' carries
 * `pretrain` in its round config: the site trains the contrastive objective (SimCLR's NT-Xent on
 * two augmented views of native-resolution crops of its images, labelled or not) on the model
 * (encoder + projection head) instead of the classification loss, and answers with the weights,
 * its training-image count and the mean contrastive loss. A classification round whose run starts
 * from a pretrained encoder carries `startFrom`: the pretrain run and the SHA-256 of its encoder
 * (libs/ml encoderHash), which the site checks against the model of the run's first round.
 */

/** Bounds shared by the run config (apps/coordinator run-config.schema.ts) and the wire. */
export const PRETRAIN_LIMITS = Object.freeze({
  maxTemperature: 10,
  minProjectionDim: 2,
  maxProjectionDim: 1024,
  maxProjectionHidden: 4096,
  minCropSize: 16,
  maxCropSize: 1024,
  maxPairsPerImage: 64,
});

/** The contrastive settings of a pretrain run's round (every field resolved by the coordinator). */
export const pretrainRoundSchema = z
  .object({
    /** NT-Xent temperature tau. */
    temperature: z.number().positive().max(PRETRAIN_LIMITS.maxTemperature),
    /** Width of the projection head's output (proj2) and hidden layer (proj1). */
    projectionDim: z.number().int().min(PRETRAIN_LIMITS.minProjectionDim).max(PRETRAIN_LIMITS.maxProjectionDim),
    projectionHidden: z.number().int().min(1).max(PRETRAIN_LIMITS.maxProjectionHidden),
    /** Side (px) of the crops of the image (at the model's tile scale, else native resolution) the two views come from; resized to the model's imageSize. */
    cropSize: z.number().int().min(PRETRAIN_LIMITS.minCropSize).max(PRETRAIN_LIMITS.maxCropSize),
    /** Pairs of views drawn from each image per local epoch. */
    pairsPerImage: z.number().int().min(1).max(PRETRAIN_LIMITS.maxPairsPerImage),
  })
  .strict();
export type PretrainRound = z.infer<typeof pretrainRoundSchema>;

/** The pretrained encoder a classification run starts from. */
export const startFromRoundSchema = z
  .object({
    /** The pretrain run whose encoder it is. */
    run: z.string().uuid(),
    /** SHA-256 (hex) of the encoder's tensors (libs/ml encoderHash). */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be a sha256: 64 lowercase hex characters'),
  })
  .strict();
export type StartFromRound = z.infer<typeof startFromRoundSchema>;
