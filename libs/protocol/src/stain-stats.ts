import { z } from 'zod';
import { signedBytes } from '@histofed/fl-core';
import { refusalSchema } from './refusals';
import { siteIdSchema, signatureSchema } from './schemas';

/**
 * A federated stain target (issue 14): before round 1 of a run that asks for one, the coordinator
 * asks each participating site for the stain statistics of its own training images — a Macenko
 * fit (two unit stain vectors and two maximum concentrations: 8 numbers) or Reinhard's LAB means
 * and standard deviations (6 numbers and a pixel count) — signed with the site's identity key; it
 * combines them (libs/data combineMacenkoTargets / combineReinhardStats) into the run's stain
 * target, which every site and the central evaluation then normalize to. No pixel leaves a site.
 */
export const StainEvents = {
  stats: 'coordinator:stain-stats',
} as const;

export const STAIN_STATISTICS_METHODS = ['macenko', 'reinhard'] as const;
export type StainStatisticsMethod = (typeof STAIN_STATISTICS_METHODS)[number];

const finite = z.number().finite();
const vec3 = z.tuple([finite, finite, finite]);

export const stainStatisticsSchema = z.discriminatedUnion('method', [
  z
    .object({
      method: z.literal('macenko'),
      stainMatrix: z.tuple([vec3, vec3]),
      maxConcentrations: z.tuple([finite, finite]),
    })
    .strict(),
  z
    .object({
      method: z.literal('reinhard'),
      space: z.literal('cie-lab'),
      mean: vec3,
      std: vec3,
      pixels: z.number().int().positive(),
    })
    .strict(),
]);
export type StainStatistics = z.infer<typeof stainStatisticsSchema>;

export const stainStatsRequestSchema = z
  .object({
    runId: z.string().uuid(),
    method: z.enum(STAIN_STATISTICS_METHODS),
  })
  .strict();
export type StainStatsRequest = z.infer<typeof stainStatsRequestSchema>;

export const stainStatsAckSchema = z.discriminatedUnion('ok', [
  z
    .object({
      ok: z.literal(true),
      siteId: siteIdSchema,
      /** Training images the statistics were computed on. */
      images: z.number().int().min(1).max(10_000_000),
      stats: stainStatisticsSchema,
      /** Ed25519 signature over stainStatsSignedBytes by the site's identity key. */
      signature: signatureSchema,
    })
    .strict(),
  refusalSchema.extend({ error: z.string().max(2000) }),
]);
export type StainStatsAck = z.infer<typeof stainStatsAckSchema>;

/** The bytes a site signs: run, site, image count and every number of its statistics, in a fixed order. */
export function stainStatsSignedBytes(runId: string, siteId: string, images: number, stats: StainStatistics): Uint8Array {
  const numbers =
    stats.method === 'macenko'
      ? [...stats.stainMatrix[0], ...stats.stainMatrix[1], ...stats.maxConcentrations]
      : [...stats.mean, ...stats.std, stats.pixels];
  return signedBytes('histofed-stain-stats-v1', [runId, siteId, images, stats.method, ...numbers]);
}
