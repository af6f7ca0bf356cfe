import {
  SECAGG_MAX_CLIP_RANGE,
  SECAGG_MAX_NEIGHBOURS,
  SECAGG_MAX_VECTOR_LENGTH,
  SECAGG_MIN_CLIP_RANGE,
  SECAGG_MIN_NEIGHBOURS,
  defaultThreshold,
  thresholdFits,
} from '@histofed/protocol';
import { SecAggError } from './errors';

/**
 * What every party of one secure-aggregation round must agree on. The coordinator fixes these
 * before stage 1 and sends them to each participant.
 */
export interface SecAggParams {
  readonly runId: string;
  /** Round number, 0 .. 2^32-1; bound into every signature and share so nothing replays across rounds. */
  readonly round: number;
  /** k: the neighbourhood size asked of `buildNeighbourhoods` (a site's actual degree may be lower, see `neighbourDegree`). */
  readonly neighbourCount: number;
  /**
   * t: shares needed to rebuild a secret. A site keeps one share of its own self-mask seed, so a
   * seed has k+1 holders: (k+1)/2 < t <= k means no two disjoint groups of holders can both reach t.
   */
  readonly threshold: number;
  /** Every coordinate of an update is clipped to [-clipRange, clipRange] before weighting. */
  readonly clipRange: number;
  /** L: length of the flattened update. */
  readonly vectorLength: number;
}

/** Same alphabet as the protocol's site ids; ids are compared with plain string order (`<`). */
const SITE_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** The limits live in libs/protocol (secagg-limits.ts), shared with the wire schemas and the run config. */
export const MAX_NEIGHBOURS = SECAGG_MAX_NEIGHBOURS;
export const MAX_VECTOR_LENGTH = SECAGG_MAX_VECTOR_LENGTH;
const MIN_CLIP_RANGE = SECAGG_MIN_CLIP_RANGE;
const MAX_CLIP_RANGE = SECAGG_MAX_CLIP_RANGE;
/** Each site's |quantized value| stays <= 2^30, so sums of weights up to ~2 still fit the signed 32-bit ring. */
const RING_HEADROOM = 2 ** 30;

export { defaultThreshold };

/** f, the fixed-point fraction bits: the largest f with clipRange * 2^f <= 2^30. */
export function fractionBitsFor(clipRange: number): number {
  if (!Number.isFinite(clipRange) || clipRange < MIN_CLIP_RANGE || clipRange > MAX_CLIP_RANGE) {
    throw new SecAggError(`clipRange must be a number in [2^-30, 2^30], got ${clipRange}`);
  }
  let f = Math.floor(Math.log2(RING_HEADROOM / clipRange));
  // log2 may be off by one ulp at powers of two.
  while (clipRange * 2 ** f > RING_HEADROOM) f--;
  while (clipRange * 2 ** (f + 1) <= RING_HEADROOM) f++;
  return f;
}

export function checkSiteId(siteId: string, what = 'site id'): void {
  if (typeof siteId !== 'string' || !SITE_ID.test(siteId)) {
    throw new SecAggError(`${what} ${JSON.stringify(siteId)} must be 1-63 chars of a-z, 0-9, "_" or "-", starting with a letter or digit`);
  }
}

function checkInteger(value: number, field: string, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new SecAggError(`params.${field} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

/** Throws a SecAggError naming the first bad field; returns the params unchanged otherwise. */
export function validateParams(params: SecAggParams): SecAggParams {
  if (typeof params.runId !== 'string' || params.runId.length === 0) {
    throw new SecAggError('params.runId must be a non-empty string');
  }
  checkInteger(params.round, 'round', 0, 0xffffffff);
  checkInteger(params.neighbourCount, 'neighbourCount', SECAGG_MIN_NEIGHBOURS, MAX_NEIGHBOURS);
  const k = params.neighbourCount;
  if (!thresholdFits(k, params.threshold)) {
    throw new SecAggError(
      `params.threshold must be an integer with (neighbourCount+1)/2 < threshold <= neighbourCount (${defaultThreshold(k)}..${k} for neighbourCount ${k}), got ${params.threshold}`,
    );
  }
  fractionBitsFor(params.clipRange);
  checkInteger(params.vectorLength, 'vectorLength', 1, MAX_VECTOR_LENGTH);
  return params;
}
