import { z } from 'zod';
import { refusalSchema } from './refusals';
import { boxPublicKeySchema, signPublicKeySchema, signatureSchema, siteIdSchema } from './schemas';
import {
  SECAGG_MAX_CLIP_RANGE,
  SECAGG_MAX_HOLDERS,
  SECAGG_MAX_NEIGHBOURS,
  SECAGG_MAX_SHARE_CHARS,
  SECAGG_MAX_VECTOR_LENGTH,
  SECAGG_MIN_CLIP_RANGE,
  SECAGG_MIN_NEIGHBOURS,
  SECAGG_MIN_THRESHOLD,
  thresholdFits,
} from './secagg-limits';

/**
 * Secure aggregation (SecAgg+) rounds add three coordinator -> site requests, answered in their
 * acks; the masked update itself travels like any update (sealed, signed, chunked), its envelope
 * marked `masked`. Keys and shares are base64 here; libs/secagg holds the cryptography.
 */
export const SecAggEvents = {
  advertise: 'coordinator:secagg-advertise',
  shareKeys: 'coordinator:secagg-share-keys',
  unmask: 'coordinator:secagg-unmask',
} as const;

const shareSchema = z.string().max(SECAGG_MAX_SHARE_CHARS).regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64');
const byNeighbour = <T extends z.ZodType>(value: T) =>
  z.record(siteIdSchema, value).refine((r) => Object.keys(r).length <= SECAGG_MAX_HOLDERS, `at most ${SECAGG_MAX_HOLDERS} entries`);

const roundRef = { runId: z.string().uuid(), round: z.number().int().min(0) };
const failure = refusalSchema.extend({ error: z.string().max(2000) });

/** What every participant must agree on for the round (libs/secagg SecAggParams without ids). */
export const secAggParamsSchema = z
  .object({
    neighbourCount: z.number().int().min(SECAGG_MIN_NEIGHBOURS).max(SECAGG_MAX_NEIGHBOURS),
    threshold: z.number().int().min(SECAGG_MIN_THRESHOLD).max(SECAGG_MAX_NEIGHBOURS),
    clipRange: z.number().min(SECAGG_MIN_CLIP_RANGE).max(SECAGG_MAX_CLIP_RANGE),
    vectorLength: z.number().int().min(1).max(SECAGG_MAX_VECTOR_LENGTH),
  })
  .refine((p) => thresholdFits(p.neighbourCount, p.threshold), {
    message: 'threshold must be a strict majority of neighbourCount + 1 and at most neighbourCount',
    path: ['threshold'],
  });
export type SecAggParamsMessage = z.infer<typeof secAggParamsSchema>;

/** Stage 1: create this round's key pairs and sign them. */
export const secAggAdvertiseRequestSchema = z.object({ ...roundRef, params: secAggParamsSchema });
export type SecAggAdvertiseRequest = z.infer<typeof secAggAdvertiseRequestSchema>;

export const advertisedKeysSchema = z.object({
  cPublicKey: boxPublicKeySchema,
  sPublicKey: boxPublicKeySchema,
  signature: signatureSchema,
});
export type AdvertisedKeysMessage = z.infer<typeof advertisedKeysSchema>;

export const secAggAdvertiseAckSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), keys: advertisedKeysSchema }),
  failure,
]);
export type SecAggAdvertiseAck = z.infer<typeof secAggAdvertiseAckSchema>;

/** Stage 2: your neighbours and their signed keys; answer with one sealed share pair per neighbour. */
export const secAggShareKeysRequestSchema = z.object({
  ...roundRef,
  neighbours: byNeighbour(advertisedKeysSchema.extend({ signPublicKey: signPublicKeySchema })),
});
export type SecAggShareKeysRequest = z.infer<typeof secAggShareKeysRequestSchema>;

export const secAggShareKeysAckSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), shares: byNeighbour(shareSchema) }),
  failure,
]);
export type SecAggShareKeysAck = z.infer<typeof secAggShareKeysAckSchema>;

/** Stage 3 rides on the train task: the sealed shares the site's neighbours made for it. */
export const secAggTaskSchema = z.object({
  /** The site's weight is its sample count divided by this (>= the participants' total samples). */
  weightScale: z.number().positive(),
  /** Each coordinate of the site's update is clipped to [-clipRange, clipRange] (params.clipRange). */
  params: secAggParamsSchema,
  /** Sites also scale their update to this L2 norm bound (0 = none): the coordinator cannot check it. */
  maxUpdateNorm: z.number().min(0),
  shares: byNeighbour(shareSchema),
});
export type SecAggTask = z.infer<typeof secAggTaskSchema>;

/** Stage 4: reveal b shares of the survivors, s shares of the dropped (never both for one site). */
export const secAggUnmaskRequestSchema = z.object({
  ...roundRef,
  survivors: z.array(siteIdSchema).max(SECAGG_MAX_HOLDERS),
  dropped: z.array(siteIdSchema).max(SECAGG_MAX_HOLDERS),
});
export type SecAggUnmaskRequest = z.infer<typeof secAggUnmaskRequestSchema>;

export const secAggUnmaskAckSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), b: byNeighbour(shareSchema), s: byNeighbour(shareSchema) }),
  failure,
]);
export type SecAggUnmaskAck = z.infer<typeof secAggUnmaskAckSchema>;
