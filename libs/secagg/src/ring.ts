import { SecAggError } from './errors';
import { fractionBitsFor } from './params';

/**
 * Fixed-point encoding into the ring Z_{2^32}: masks only cancel in modular arithmetic, so each
 * site sends round(w * clip(delta) * 2^f) mod 2^32 and the coordinator reads the unmasked sum
 * back as a signed 32-bit integer.
 */

// Module-scope aliases: looking up globals inside the hot loops is slow in sandboxes such as Jest's vm.
const { round } = Math;
const finite = Number.isFinite;

/** q_i = round(weight * clip(delta_i, ±clipRange) * 2^f) mod 2^32, with f = fractionBitsFor(clipRange). */
export function quantize(delta: Float32Array, weight: number, clipRange: number): Uint32Array {
  if (!Number.isFinite(weight) || weight <= 0 || weight > 1) {
    throw new SecAggError(`weight must be in (0, 1], got ${weight}`);
  }
  // weight * 2^f is exact (a power-of-two scale), so the rounding below is the only error.
  const scale = weight * 2 ** fractionBitsFor(clipRange);
  const out = new Uint32Array(delta.length);
  for (let i = 0; i < delta.length; i++) {
    const x = delta[i];
    if (!finite(x)) throw new SecAggError(`delta[${i}] is ${x}; updates must be finite`);
    out[i] = round((x > clipRange ? clipRange : x < -clipRange ? -clipRange : x) * scale) >>> 0;
  }
  return out;
}

/** Reads each ring element as a signed 32-bit integer and divides by 2^f (exact in float64). */
export function dequantize(ring: Uint32Array, clipRange: number): Float64Array {
  const unit = 2 ** -fractionBitsFor(clipRange);
  const out = new Float64Array(ring.length);
  for (let i = 0; i < ring.length; i++) out[i] = (ring[i] | 0) * unit;
  return out;
}

/**
 * Largest |dequantized sum - sum of weight * clip(delta)| per coordinate over `siteCount` sites:
 * each site's rounding costs at most half a step 2^-f (the 2^-20 covers float64 rounding of w * x).
 * Divide by the sites' weight sum for the bound on the weighted average.
 */
export function quantizationErrorBound(siteCount: number, clipRange: number): number {
  return siteCount * (0.5 + 2 ** -20) * 2 ** -fractionBitsFor(clipRange);
}
