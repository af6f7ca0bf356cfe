import { z } from 'zod';
import { blobRefSchema, sha256HexSchema } from './chunk-schemas';
import { refusalSchema } from './refusals';
import { secAggTaskSchema } from './secagg-messages';
import {
  boxPublicKeySchema,
  challengeSchema,
  nonceSchema,
  signPublicKeySchema,
  signatureSchema,
  roundConfigSchema,
  siteIdSchema,
  taskKindSchema,
} from './schemas';

// ---- enrollment (REST, POST /api/enroll) ---------------------------------------------------

/**
 * A site asks to join: its public keys, and `proof`, its Ed25519 signature of the request
 * (enrollmentSignedBytes), so nobody can enroll keys they do not hold. An administrator approves.
 */
/** An enrollment token: 32 random bytes, base64url (43 characters); checked by hash, never stored. */
export const enrollmentTokenSchema = z.string().regex(/^[A-Za-z0-9_-]{32,128}$/, 'must be the enrollment token the administrator issued (base64url)');

export const enrollmentRequestSchema = z.object({
  protocolVersion: z.number().int(),
  siteId: siteIdSchema,
  boxPublicKey: boxPublicKeySchema,
  signPublicKey: signPublicKeySchema,
  proof: signatureSchema,
  /**
   * The single-use token an administrator issued for this site id (POST /api/sites/:id/enrollment-token),
   * handed to the hospital out of band: a site id with a token enrolls only with it (and is then
   * approved). Not part of the signed bytes: it is a bearer secret, like the admin token.
   */
  enrollmentToken: enrollmentTokenSchema.optional(),
});
export type EnrollmentRequest = z.infer<typeof enrollmentRequestSchema>;

export const enrollmentResponseSchema = z.object({
  siteId: siteIdSchema,
  status: z.enum(['pending', 'approved', 'revoked']),
  signKeyFingerprint: z.string(),
  coordinatorBoxPublicKey: boxPublicKeySchema,
  /**
   * The coordinator's Ed25519 key (it signs the final models it sends the sites): the site pins it
   * on first enrollment and refuses another one later. Absent from coordinators before issue 15.
   */
  coordinatorSignPublicKey: signPublicKeySchema.optional(),
});
export type EnrollmentResponse = z.infer<typeof enrollmentResponseSchema>;

// ---- site -> coordinator -------------------------------------------------------------------

/** Asks for a fresh challenge; the next hello on this connection must sign it. */
export const challengeRequestSchema = z.object({ siteId: siteIdSchema });
export type ChallengeRequest = z.infer<typeof challengeRequestSchema>;

/**
 * Authenticates the connection: `signature` is the site's Ed25519 signature of the challenge
 * together with the hello's identity fields (helloSignedBytes). Only enrolled, approved sites pass.
 */
export const siteHelloSchema = z.object({
  protocolVersion: z.number().int(),
  siteId: siteIdSchema,
  boxPublicKey: boxPublicKeySchema,
  signPublicKey: signPublicKeySchema,
  signature: signatureSchema,
  backend: z.string().max(64),
  software: z.string().max(128),
  trainSamples: z.number().int().min(0),
  validationSamples: z.number().int().min(0),
  /**
   * Active learning (issue 16): images the site's pathologists labelled (its label store), included
   * in trainSamples. A count only; absent when there are none (and from sites before it).
   */
  labelledImages: z.number().int().min(0).optional(),
});
export type SiteHello = z.infer<typeof siteHelloSchema>;

/**
 * A trained model, sealed (tweetnacl box) to the coordinator's public key with the site's key.
 * The plaintext is an update envelope (update-envelope.ts): header + weights. The ciphertext
 * travels first, in chunks (site:upload-chunk, chunked-transfer.ts); this message names the
 * completed upload. `signature` binds run, round, kind, site, the nonce and the ciphertext's
 * SHA-256 and size (updateSignedBytes); a nonce is accepted once, ever.
 */
export const sealedUpdateSchema = z.object({
  runId: z.string().uuid(),
  round: z.number().int().min(0),
  kind: taskKindSchema,
  siteId: siteIdSchema,
  nonce: nonceSchema,
  uploadId: z.string().uuid(),
  sealedSha256: sha256HexSchema,
  sealedBytes: z.number().int().min(0),
  signature: signatureSchema,
});
export type SealedUpdate = z.infer<typeof sealedUpdateSchema>;

/** A site could not complete a task (out of memory, data unreadable, ...). */
export const taskFailedSchema = z.object({
  runId: z.string().uuid(),
  round: z.number().int().min(0),
  kind: taskKindSchema,
  reason: z.string().max(2000),
});
export type TaskFailed = z.infer<typeof taskFailedSchema>;

// ---- coordinator -> site -------------------------------------------------------------------

/** Most members of the ensemble a boosted member's weights come from (the global model and up to 7 boosted members). */
export const BOOSTING_MAX_MEMBERS = 8;

/**
 * A boosted ensemble member's round (issue 16): the site weighs each of its training images by the
 * current ensemble's error on it (libs/ml boostingImageWeights: w = exp(strength x (1 - p(true class))),
 * capped, mean 1 within each class) and trains with those weights. The members are models every
 * site holds (the final global model and the boosted members before this one), fetched in chunks
 * like the round's model; their probabilities are averaged. Nothing about the weights leaves the site.
 */
export const boostingTaskSchema = z
  .object({
    /** The ensemble so far (its mean), in order. */
    members: z
      .array(blobRefSchema)
      .min(1)
      .max(BOOSTING_MAX_MEMBERS)
      .refine((ms) => new Set(ms.map((m) => m.sha256)).size === ms.length, 'a member is listed twice'),
    strength: z.number().finite().min(0).max(10),
    /** Largest / smallest image weight within a class. */
    maxRatio: z.number().finite().min(1).max(1000),
  })
  .strict();
export type BoostingTask = z.infer<typeof boostingTaskSchema>;

/**
 * Train (a round, or the final personalization) starting from the global model `modelHash`; the
 * site fetches its bytes in chunks (site:fetch-chunk) as `model` describes.
 */
export const trainTaskSchema = z
  .object({
    kind: taskKindSchema,
    config: roundConfigSchema,
    modelHash: sha256HexSchema,
    model: blobRefSchema,
    /** Present in secure-aggregation rounds: the site sends a masked update (libs/secagg). */
    secagg: secAggTaskSchema.optional(),
    /** Present in (and only in) 'boost' tasks: how the site weighs its training images (boostingTaskSchema). */
    boosting: boostingTaskSchema.optional(),
  })
  .refine((t) => t.model.sha256 === t.modelHash, { message: 'model.sha256 must equal modelHash', path: ['model', 'sha256'] })
  .refine((t) => (t.kind === 'boost') === (t.boosting !== undefined), { message: "a 'boost' task, and only one, says how to weigh the images (boosting)", path: ['boosting'] });
export type TrainTask = z.infer<typeof trainTaskSchema>;

// ---- acknowledgements ---------------------------------------------------------------------

export const challengeAckSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), challenge: challengeSchema }),
  refusalSchema,
]);
export type ChallengeAck = z.infer<typeof challengeAckSchema>;

export const helloAckSchema = z.discriminatedUnion('ok', [
  z.object({
    ok: z.literal(true),
    coordinatorBoxPublicKey: boxPublicKeySchema,
    /** The coordinator's Ed25519 key (as in the enrollment response): a site that has none pinned pins it here. */
    coordinatorSignPublicKey: signPublicKeySchema.optional(),
    /** The socket message limit: chunks must stay under it (chunkBytesForLimit). */
    maxMessageBytes: z.number().int().positive(),
    /** The largest update the coordinator accepts (bytes of the sealed ciphertext). */
    maxUpdateBytes: z.number().int().positive(),
  }),
  refusalSchema,
]);
export type HelloAck = z.infer<typeof helloAckSchema>;

/** The plain ack: done, or refused (with a code where the refuser has one). */
export const ackSchema = z.discriminatedUnion('ok', [z.object({ ok: z.literal(true) }), refusalSchema]);
export type Ack = z.infer<typeof ackSchema>;

// ---- event names (the typed maps, with each event's schemas, are in events.ts) ----------------

/** Event names, one place. */
export const SiteEvents = {
  challenge: 'site:challenge',
  hello: 'site:hello',
  update: 'site:update',
  taskFailed: 'site:task-failed',
} as const;

export const CoordinatorEvents = {
  train: 'coordinator:train',
} as const;
