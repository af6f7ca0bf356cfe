import { ValidationError } from '@histofed/fl-core';
import { normalizeMacenko, validateMacenkoTarget, type MacenkoOptions, type MacenkoTarget } from './macenko';
import { checkPixels, type RgbPixels } from './pixels';
import { normalizeReinhard, validateReinhardStats, type ReinhardStats } from './reinhard';
import { applyStainShift, type StainShift } from './stain-shift';

/** A fitted normalization target of either method: small, JSON-serializable, free of pixels. */
export type StainTarget = ReinhardStats | MacenkoTarget;

/** Throws ValidationError unless `t` is a well-formed StainTarget (e.g. parsed from JSON). */
export function validateStainTarget(t: unknown, what = 'stain target'): asserts t is StainTarget {
  const method = (t as { method?: unknown } | null)?.method;
  if (method === 'reinhard') validateReinhardStats(t, what);
  else if (method === 'macenko') validateMacenkoTarget(t, what);
  else throw new ValidationError(`${what}.method must be 'reinhard' or 'macenko', got ${JSON.stringify(method)}`);
}

/** One image's pixels in, transformed pixels out (same length, values in [0, 1]). */
export type PixelTransform = (pixels: RgbPixels) => RgbPixels;

/**
 * The per-image preprocessing for a target: Reinhard or Macenko normalization, each image to its
 * own fitted statistics. Use the same target in training and in evaluation.
 */
export function createStainNormalizer(target: StainTarget, options: MacenkoOptions = {}): PixelTransform {
  validateStainTarget(target);
  if (target.method === 'reinhard') return (pixels) => normalizeReinhard(pixels, target);
  return (pixels) => normalizeMacenko(pixels, target, options);
}

/** The per-image transform of a simulated site's stain shift. */
export function createStainShifter(shift: StainShift): PixelTransform {
  return (pixels) => applyStainShift(pixels, shift);
}

/**
 * Applies `transform` to each of the `count` images of a batch stored back to back (the layout of
 * LabeledImages.images: count * size * size * 3 values), returning a new batch. Each image is
 * transformed on its own, so per-image statistics stay per image.
 */
export function transformBatch(batch: Float32Array, count: number, transform: PixelTransform): Float32Array {
  checkPixels(batch, 'batch');
  if (!Number.isInteger(count) || count < 1 || batch.length % count !== 0 || (batch.length / count) % 3 !== 0) {
    throw new ValidationError(`batch of length ${batch.length} cannot hold ${count} RGB images of equal size`);
  }
  const per = batch.length / count;
  const out = new Float32Array(batch.length);
  for (let k = 0; k < count; k++) {
    const result = transform(batch.subarray(k * per, (k + 1) * per));
    if (result.length !== per) throw new ValidationError(`transform changed the image length from ${per} to ${result.length}`);
    out.set(result, k * per);
  }
  return out;
}
