import { z } from 'zod';
import { alignmentRoundSchema } from './feature-alignment';
import { pretrainRoundSchema, startFromRoundSchema } from './pretraining';
import { BACKBONE_NAMES, CLASS_WEIGHTINGS, LOCAL_TENSOR_POLICIES } from '@histofed/fl-core';
import type { BackboneSpec, ModelSpec, StainNormalizationTarget, TileSpec } from '@histofed/fl-core';
import type { Expect, MutuallyAssignable } from './type-checks';
import { clinicalSchemaSchema } from './clinical-schema';

/** Site ids appear in logs, file names and URLs: keep them to a safe alphabet. */
export const siteIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'site id must be 1-63 chars of a-z, 0-9, "_" or "-", starting with a letter or digit');

const base64Of = (bytes: number) =>
  z
    .string()
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64')
    .refine((s) => Buffer.from(s, 'base64').length === bytes, `must encode exactly ${bytes} bytes`);

/** X25519 public key, base64. */
export const boxPublicKeySchema = base64Of(32);
/** Ed25519 public key, base64. */
export const signPublicKeySchema = base64Of(32);
/** Ed25519 detached signature, base64. */
export const signatureSchema = base64Of(64);
/** A fresh random challenge the coordinator hands a connecting site, base64. */
export const challengeSchema = base64Of(32);
/** tweetnacl box nonce, base64. */
export const nonceSchema = base64Of(24);

/** Binary payloads: socket.io delivers Buffers (Node) or ArrayBuffers; both are accepted. */
export const binarySchema = z.custom<Uint8Array>(
  (v) => v instanceof Uint8Array || v instanceof ArrayBuffer,
  'must be binary (Buffer/Uint8Array)',
).transform((v) => (v instanceof ArrayBuffer ? new Uint8Array(v) : (v as Uint8Array)));

export const metricsSchema = z.record(z.string().max(64), z.number().refine(Number.isFinite, 'must be finite'));

/** A layer name of a tfjs Layers model (backbone cut points). */
const layerNameSchema = z.string().regex(/^[A-Za-z0-9_.\-/]{1,128}$/, 'must be a layer name (letters, digits, _ . - /)');

/** A pretrained backbone under the heads (fl-core BackboneSpec). */
export const backboneSpecSchema = z
  .object({
    name: z.enum(BACKBONE_NAMES),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 in hex').optional(),
    cut: layerNameSchema,
    input: z.enum(['unit', 'signed']),
    features: z.number().int().min(1).max(65536).optional(),
    trainFrom: layerNameSchema.optional(),
  })
  .strict();

/** Tile geometry (fl-core TileSpec): the image scale before tiling and the training views per image. */
export const tileSpecSchema = z
  .object({
    scale: z.number().min(0.05).max(4),
    views: z.number().int().min(0).max(256),
  })
  .strict();

export const modelSpecSchema = z.object({
  kind: z.string().min(1).max(64),
  imageSize: z.number().int().min(16).max(512),
  numClasses: z.number().int().min(2).max(1000),
  options: z.record(z.string(), z.number()).optional(),
  subtypeParents: z.array(z.number().int().min(0).max(999)).max(1000).readonly().optional(),
  backbone: backboneSpecSchema.optional(),
  tiles: tileSpecSchema.optional(),
  /** Fusion with a clinical table: the declared columns (clinical-schema.ts). */
  clinical: clinicalSchemaSchema.optional(),
});

/** Shape check only; the receiving site validates the target fully (libs/data validateStainTarget). */
export const stainNormalizationSchema = z
  .object({ method: z.enum(['macenko', 'reinhard']) })
  .catchall(z.unknown())
  .nullable();

/** What a site needs to train one round, besides the global weights (the train task's `config`). */
export const roundConfigSchema = z.object({
  runId: z.string().uuid(),
  round: z.number().int().min(0),
  model: modelSpecSchema,
  localEpochs: z.number().int().min(1).max(1000),
  batchSize: z.number().int().min(1).max(4096),
  learningRate: z.number().positive().max(10),
  /** FedProx proximal coefficient mu (0 disables the term). */
  proximalMu: z.number().min(0).max(1000),
  seed: z.number().int(),
  /** Applied to every image before training and evaluation; null = none. */
  stainNormalization: stainNormalizationSchema.default(null),
  /** Augment the training images (flips, rotations, zoom, colour jitter), a new draw every round. */
  augment: z.boolean().default(false),
  /**
   * 'balanced': each site weights the loss of every class (and subtype) by its inverse frequency in
   * its own training images (capped), against class imbalance; 'none': plain cross-entropy.
   */
  classWeighting: z.enum(CLASS_WEIGHTINGS).default('none'),
  /**
   * Each training patient weighs the same in the loss (its rows 1 / their number; the class weights
   * then balance patients) instead of each image; false: each image (tile row) alike.
   */
  patientWeighting: z.boolean().default(false),
  /**
   * Tensors the site keeps instead of taking the global model's (FedBN): its own from the previous
   * round of this run, from its state directory; 'none' = take every tensor.
   */
  localTensors: z.enum(LOCAL_TENSOR_POLICIES).default('none'),
  /**
   * Stain augmentation: HED jitter (Tellez et al. 2018) of the augmented training images, sigma of
   * the H, E, D concentration scale and shift; null = the default (0.05 for tiled models' views, none
   * for whole images); 0 = none. Applies only when `augment` is on.
   */
  stainAugmentation: z.number().min(0).max(0.5).nullable().default(null),
  /**
   * Feature alignment (CORAL or MMD toward the federation's feature moments, weight lambda); the
   * site also reports its own moments with its update. null: none.
   */
  alignment: alignmentRoundSchema.nullable().default(null),
  /** Issue 19: a pretrain run's round trains the contrastive objective with these settings (pretraining.ts); null: classification. */
  pretrain: pretrainRoundSchema.nullable().default(null),
  /** Issue 19: the pretrained encoder the run starts from (the site checks the first round's model against it); null: none. */
  startFrom: startFromRoundSchema.nullable().default(null),
});
/** A validated round configuration (defaults applied): the type is the schema's. */
export type RoundConfig = z.output<typeof roundConfigSchema>;

/**
 * Why the coordinator asks for training: a federated round, the final personalization, or a round
 * of a boosted ensemble member (issue 16: training images weighted by the current ensemble's errors).
 */
export const taskKindSchema = z.enum(['round', 'personalize', 'boost']);

// ---- compile-time links to fl-core's model types (libs/ml and libs/data work with those) --------

/** A validated model spec is a fl-core ModelSpec, and every ModelSpec passes the schema's shape. */
export type ModelSpecSchemaAgrees = Expect<MutuallyAssignable<z.output<typeof modelSpecSchema>, ModelSpec>>;
export type BackboneSpecSchemaAgrees = Expect<MutuallyAssignable<z.output<typeof backboneSpecSchema>, BackboneSpec>>;
export type TileSpecSchemaAgrees = Expect<MutuallyAssignable<z.output<typeof tileSpecSchema>, TileSpec>>;
export type StainNormalizationSchemaAgrees = Expect<
  MutuallyAssignable<NonNullable<z.output<typeof stainNormalizationSchema>>, StainNormalizationTarget>
>;
