import { ValidationError } from '@histofed/fl-core';
import { checkNumbers, checkPixels, clamp01, type RgbPixels, type Vec3 } from './pixels';

/**
 * Reinhard colour transfer (Reinhard, Ashikhmin, Gooch, Shirley, "Color transfer between images",
 * IEEE CG&A 2001): in a decorrelated colour space, shift and scale each channel of an image so that
 * its mean and standard deviation match those of a target.
 *
 * Colour space: CIE L*a*b* (sRGB companding, D65 white), the variant used by most histopathology
 * toolkits (StainTools, torchstain, OpenCV-based pipelines), rather than the paper's logarithmic
 * l-alpha-beta: Lab is defined for black pixels (log LMS is not) and its inverse is exact. Statistics
 * are taken over all pixels of an image.
 *
 * The statistics are six numbers plus a pixel count: a site can fit them to its own images and share
 * them (or their average over many images) without sharing a pixel.
 */
export interface ReinhardStats {
  readonly method: 'reinhard';
  /** Always 'cie-lab' (CIE L*a*b*, sRGB, D65). */
  readonly space: 'cie-lab';
  /** Per-channel mean of L*, a*, b*. */
  readonly mean: Vec3;
  /** Per-channel population standard deviation of L*, a*, b*. */
  readonly std: Vec3;
  /** Pixels the statistics summarize (weights when statistics are combined). */
  readonly pixels: number;
}

// sRGB (D65) <-> CIE XYZ, IEC 61966-2-1 matrices; white point of D65 normalized to Y = 1.
const XN = 0.95047;
const YN = 1.0;
const ZN = 1.08883;
const EPS = (6 / 29) ** 3;
const KAPPA = 3 * (6 / 29) ** 2;
const { cbrt, pow } = Math;

function srgbToLinear(c: number): number {
  return c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4);
}

function linearToSrgb(c: number): number {
  return c <= 0.0031308 ? 12.92 * c : 1.055 * pow(c, 1 / 2.4) - 0.055;
}

const f = (t: number): number => (t > EPS ? cbrt(t) : t / KAPPA + 4 / 29);
const finv = (t: number): number => (t > 6 / 29 ? t * t * t : KAPPA * (t - 4 / 29));

/** Converts RGB pixels in [0, 1] to CIE L*a*b* (L in [0, 100]), as a Float64Array of triples. */
export function rgbToLab(pixels: RgbPixels): Float64Array {
  checkPixels(pixels);
  const out = new Float64Array(pixels.length);
  for (let i = 0; i < pixels.length; i += 3) {
    const r = srgbToLinear(clamp01(pixels[i]));
    const g = srgbToLinear(clamp01(pixels[i + 1]));
    const b = srgbToLinear(clamp01(pixels[i + 2]));
    const fx = f((0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / XN);
    const fy = f((0.2126729 * r + 0.7151522 * g + 0.072175 * b) / YN);
    const fz = f((0.0193339 * r + 0.119192 * g + 0.9503041 * b) / ZN);
    out[i] = 116 * fy - 16;
    out[i + 1] = 500 * (fx - fy);
    out[i + 2] = 200 * (fy - fz);
  }
  return out;
}

/** Converts CIE L*a*b* triples back to RGB in [0, 1] (out-of-gamut colours are clamped). */
export function labToRgb(lab: Float64Array | Float32Array): RgbPixels {
  const out = new Float32Array(lab.length);
  for (let i = 0; i < lab.length; i += 3) {
    const fy = (lab[i] + 16) / 116;
    const x = XN * finv(fy + lab[i + 1] / 500);
    const y = YN * finv(fy);
    const z = ZN * finv(fy - lab[i + 2] / 200);
    out[i] = clamp01(linearToSrgb(3.2404542 * x - 1.5371385 * y - 0.4985314 * z));
    out[i + 1] = clamp01(linearToSrgb(-0.969266 * x + 1.8760108 * y + 0.041556 * z));
    out[i + 2] = clamp01(linearToSrgb(0.0556434 * x - 0.2040259 * y + 1.0572252 * z));
  }
  return out;
}

function statsOfLab(lab: Float64Array): ReinhardStats {
  const n = lab.length / 3;
  const sum = [0, 0, 0];
  for (let i = 0; i < lab.length; i += 3) for (let c = 0; c < 3; c++) sum[c] += lab[i + c];
  const mean = sum.map((s) => s / n) as Vec3;
  const sq = [0, 0, 0];
  for (let i = 0; i < lab.length; i += 3) {
    for (let c = 0; c < 3; c++) {
      const d = lab[i + c] - mean[c];
      sq[c] += d * d;
    }
  }
  return { method: 'reinhard', space: 'cie-lab', mean, std: sq.map((s) => Math.sqrt(s / n)) as Vec3, pixels: n };
}

/** The Reinhard statistics (Lab mean and standard deviation) of one image or any set of pixels. */
export function fitReinhard(pixels: RgbPixels): ReinhardStats {
  return statsOfLab(rgbToLab(pixels));
}

export interface CombineReinhardOptions {
  /**
   * 'mean' (default): pixel-weighted mean of the per-image means and of the per-image standard
   * deviations -- the colour of a typical image, the usual normalization target.
   * 'pooled': the exact statistics of all pixels together (standard deviations then also include
   * the spread between images).
   */
  readonly method?: 'mean' | 'pooled';
}

/**
 * Combines statistics of many images, or of many sites, into one target. Only the statistics are
 * needed, so sites can exchange them instead of pixels. Weights are the `pixels` counts.
 */
export function combineReinhardStats(stats: readonly ReinhardStats[], options: CombineReinhardOptions = {}): ReinhardStats {
  if (stats.length === 0) throw new ValidationError('combineReinhardStats needs at least one set of statistics');
  stats.forEach((s, i) => validateReinhardStats(s, `stats[${i}]`));
  const total = stats.reduce((acc, s) => acc + s.pixels, 0);
  const mean = [0, 1, 2].map((c) => stats.reduce((acc, s) => acc + s.mean[c] * s.pixels, 0) / total) as Vec3;
  let std: Vec3;
  if ((options.method ?? 'mean') === 'pooled') {
    std = [0, 1, 2].map((c) =>
      Math.sqrt(Math.max(0, stats.reduce((acc, s) => acc + (s.std[c] ** 2 + (s.mean[c] - mean[c]) ** 2) * s.pixels, 0) / total)),
    ) as Vec3;
  } else {
    std = [0, 1, 2].map((c) => stats.reduce((acc, s) => acc + s.std[c] * s.pixels, 0) / total) as Vec3;
  }
  return { method: 'reinhard', space: 'cie-lab', mean, std, pixels: total };
}

/** Fits each image and combines the statistics (see combineReinhardStats). */
export function fitReinhardMany(images: readonly RgbPixels[], options: CombineReinhardOptions = {}): ReinhardStats {
  return combineReinhardStats(images.map((p) => fitReinhard(p)), options);
}

/**
 * Maps the colours of `pixels` so that their Lab mean and standard deviation become `target`'s:
 * lab' = (lab - mean_src) * std_tgt / std_src + mean_tgt per channel, then back to RGB (clamped).
 * `source` defaults to the statistics of `pixels` themselves; pass it to normalize tiles of one
 * slide consistently. A channel with (almost) no spread in the source is only shifted.
 */
export function normalizeReinhard(pixels: RgbPixels, target: ReinhardStats, source?: ReinhardStats): RgbPixels {
  validateReinhardStats(target, 'target');
  const lab = rgbToLab(pixels);
  const src = source ?? statsOfLab(lab);
  if (source) validateReinhardStats(source, 'source');
  const gain = [0, 1, 2].map((c) => (src.std[c] > 1e-6 ? target.std[c] / src.std[c] : 1));
  for (let i = 0; i < lab.length; i += 3) {
    for (let c = 0; c < 3; c++) lab[i + c] = (lab[i + c] - src.mean[c]) * gain[c] + target.mean[c];
  }
  return labToRgb(lab);
}

/** Throws ValidationError unless `s` is well-formed ReinhardStats (e.g. received from another site). */
export function validateReinhardStats(s: unknown, what = 'Reinhard statistics'): asserts s is ReinhardStats {
  const o = s as Partial<ReinhardStats> | null;
  if (typeof o !== 'object' || o === null || o.method !== 'reinhard' || o.space !== 'cie-lab') {
    throw new ValidationError(`${what} must be {method: 'reinhard', space: 'cie-lab', mean, std, pixels}`);
  }
  checkNumbers(o.mean, 3, `${what}.mean`);
  checkNumbers(o.std, 3, `${what}.std`);
  if (o.std.some((x) => x < 0)) throw new ValidationError(`${what}.std must not be negative`);
  if (typeof o.pixels !== 'number' || !(o.pixels > 0) || !Number.isFinite(o.pixels)) {
    throw new ValidationError(`${what}.pixels must be a positive number`);
  }
}
