import { z } from 'zod';
import { signedBytes } from '@histofed/fl-core';
import { refusalSchema } from './refusals';
import { blobRefSchema, sha256HexSchema } from './chunk-schemas';
import { modelSpecSchema, siteIdSchema, signatureSchema, stainNormalizationSchema } from './schemas';

/**
 * Federated channel pruning (issue 18): before a pruning step, the coordinator asks each site for
 * the squeeze-excitation gate statistics of the current global model on the site's own training
 * images — per conv block, each channel's mean sigmoid gate, and the image count (numbers only,
 * signed with the site's identity key). It averages them weighted by the image counts (libs/ml
 * `aggregateGateStatistics`), removes the channels with the lowest mean gate, and the next rounds
 * fine-tune the smaller model.
 */
export const PruningEvents = {
  channelStats: 'coordinator:channel-stats',
} as const;

/** Conv blocks and channels per block a report may carry (the compact CNNs: at most 4 blocks). */
export const CHANNEL_STATS_MAX_BLOCKS = 4;
export const CHANNEL_STATS_MAX_CHANNELS = 4096;
export const CHANNEL_STATS_MAX_IMAGES = 10_000_000;

export const channelStatsRequestSchema = z
  .object({
    runId: z.string().uuid(),
    /** The round the pruned model will start (names the step in logs and the signature). */
    round: z.number().int().min(1).max(100_000),
    /** The spec of the model the statistics are about (the current, possibly already pruned, one). */
    model: modelSpecSchema,
    /** The current global model (fetched like a round's model; its SHA-256 is signed with the answer). */
    weights: blobRefSchema,
    /** The run's stain normalization: the site reads its training images as its rounds do. */
    stainNormalization: stainNormalizationSchema.default(null),
  })
  .strict();
export type ChannelStatsRequest = z.infer<typeof channelStatsRequestSchema>;

const gate = z.number().finite().min(0).max(1);

export const channelStatsAckSchema = z.discriminatedUnion('ok', [
  z
    .object({
      ok: z.literal(true),
      siteId: siteIdSchema,
      /** The model the statistics are about (the request's weights.sha256). */
      sha256: sha256HexSchema,
      /** Training images the statistics were computed on. */
      images: z.number().int().min(1).max(CHANNEL_STATS_MAX_IMAGES),
      /** gates[b][c]: the mean SE gate of channel c of conv block b + 1 over the images. */
      gates: z.array(z.array(gate).min(1).max(CHANNEL_STATS_MAX_CHANNELS)).min(1).max(CHANNEL_STATS_MAX_BLOCKS),
      /** Ed25519 signature over channelStatsSignedBytes by the site's identity key. */
      signature: signatureSchema,
    })
    .strict(),
  refusalSchema.extend({ error: z.string().max(2000) }),
]);
export type ChannelStatsAck = z.infer<typeof channelStatsAckSchema>;

/** The bytes a site signs: run, round, site, model hash, image count and every gate, block by block. */
export function channelStatsSignedBytes(runId: string, round: number, siteId: string, sha256: string, images: number, gates: readonly (readonly number[])[]): Uint8Array {
  return signedBytes('histofed-channel-stats-v1', [runId, round, siteId, sha256, images, gates.length, ...gates.flatMap((g) => [g.length, ...g])]);
}
