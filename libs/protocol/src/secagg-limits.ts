/**
 * Secure aggregation's limits, in one place: the wire schemas (secagg-messages.ts), the run
 * configuration (coordinator admin/run-config.schema.ts), the coordinator's round
 * (runs/secure-aggregation.ts) and the cryptography (libs/secagg params.ts) all import them.
 */

/** Shamir x-coordinates are one byte: at most 255 holders of a secret, the site itself included. */
export const SECAGG_MAX_NEIGHBOURS = 254;
/** k >= 2: with one neighbour a site's pairwise mask would be known to that neighbour alone. */
export const SECAGG_MIN_NEIGHBOURS = 2;
/** t >= 2 (and a strict majority of k + 1, see thresholdFits). */
export const SECAGG_MIN_THRESHOLD = 2;
/** A round needs at least this many sites: a sum of two updates reveals each to the other. */
export const SECAGG_MIN_SITES = 3;
/** L, the length of the flattened update. */
export const SECAGG_MAX_VECTOR_LENGTH = 2 ** 30;
/** clipRange bounds: the fixed-point encoding needs clipRange * 2^f <= 2^30 with f >= 0. */
export const SECAGG_MIN_CLIP_RANGE = 2 ** -30;
export const SECAGG_MAX_CLIP_RANGE = 2 ** 30;
/** The largest clipRange an administrator may choose for a run (updates are deltas of weights). */
export const SECAGG_MAX_RUN_CLIP_RANGE = 1024;
/** Entries of a per-neighbour map: the neighbours and the site itself. */
export const SECAGG_MAX_HOLDERS = SECAGG_MAX_NEIGHBOURS + 1;
/** A sealed Shamir share pair is ~150 bytes of base64; generous, but bounded. */
export const SECAGG_MAX_SHARE_CHARS = 2048;

/** The smallest threshold that is a strict majority of the k + 1 holders (k neighbours and the site itself). */
export function defaultThreshold(k: number): number {
  return Math.floor((k + 1) / 2) + 1;
}

/**
 * t fits k when (k + 1) / 2 < t <= k: a secret has k + 1 holders, so no two disjoint groups of
 * holders can both reach t (they could otherwise rebuild both of a site's secrets and read its update).
 */
export function thresholdFits(k: number, t: number): boolean {
  return Number.isInteger(t) && t >= SECAGG_MIN_THRESHOLD && t > (k + 1) / 2 && t <= k;
}
