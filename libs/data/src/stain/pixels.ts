import { ValidationError } from '@histofed/fl-core';

/**
 * Pixel convention of the stain module: a Float32Array of RGB triples, channels last, values in
 * [0, 1] (bytes / 255, exactly what loadLabeledImages produces). Any number of pixels is accepted,
 * so one image (size * size * 3 values) or any flat list of pixels works; the image shape does not
 * matter to any of the colour transforms. Functions never modify their input and return a new
 * Float32Array clamped to [0, 1].
 */
export type RgbPixels = Float32Array;

/** A 3-vector in RGB (or optical-density) order. */
export type Vec3 = [number, number, number];

/** Throws ValidationError unless `pixels` is a non-empty Float32Array of RGB triples. */
export function checkPixels(pixels: RgbPixels, what = 'pixels'): void {
  if (!(pixels instanceof Float32Array)) throw new ValidationError(`${what} must be a Float32Array of RGB values in [0, 1]`);
  if (pixels.length === 0 || pixels.length % 3 !== 0) {
    throw new ValidationError(`${what} must hold RGB triples (length a positive multiple of 3), got length ${pixels.length}`);
  }
}

/** v clamped to [0, 1]; NaN becomes 0. */
export function clamp01(v: number): number {
  return v > 0 ? (v < 1 ? v : 1) : 0;
}

/**
 * The p-th percentile (0..100) of `values` with linear interpolation between order statistics
 * (numpy's default), computed on a sorted copy. `values` must not be empty.
 */
export function percentile(values: Float64Array, p: number): number {
  const sorted = Float64Array.from(values).sort();
  return percentileOfSorted(sorted, p);
}

/** As percentile, for an already ascending array. */
export function percentileOfSorted(sorted: Float64Array, p: number): number {
  const n = sorted.length;
  if (n === 0) throw new ValidationError('percentile of an empty list');
  const pos = (Math.min(100, Math.max(0, p)) / 100) * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function norm3(v: readonly number[]): number {
  return Math.hypot(v[0], v[1], v[2]);
}

export function unit3(v: readonly number[]): Vec3 {
  const n = norm3(v);
  if (!(n > 0)) throw new ValidationError('cannot normalize a zero vector');
  return [v[0] / n, v[1] / n, v[2] / n];
}

export function dot3(a: readonly number[], b: readonly number[]): number {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

export function cross3(a: readonly number[], b: readonly number[]): Vec3 {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

/** Angle between two vectors in degrees (0..180). */
export function angleDegrees(a: readonly number[], b: readonly number[]): number {
  const c = dot3(a, b) / (norm3(a) * norm3(b));
  return (Math.acos(Math.min(1, Math.max(-1, c))) * 180) / Math.PI;
}

/** Median of a non-empty list of numbers. */
export function median(values: readonly number[]): number {
  return percentile(Float64Array.from(values), 50);
}

/** Throws ValidationError unless `v` is a list of `n` finite numbers. */
export function checkNumbers(v: unknown, n: number, what: string): asserts v is number[] {
  if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new ValidationError(`${what} must be ${n} finite numbers, got ${JSON.stringify(v)}`);
  }
}
