import { ValidationError } from '@histofed/fl-core';
import { checkPixels, clamp01, type RgbPixels } from './pixels';

/**
 * HED colour augmentation (Tellez et al. 2018, "H&E-DAB jitter"): each pixel's optical density is
 * split into haematoxylin, eosin and DAB concentrations with Ruifrok & Johnston's stain vectors
 * (the matrix scikit-image's rgb2hed uses), every channel is scaled by (1 + alpha) and shifted by
 * beta — one draw per image — and the result is recomposed into RGB. It mimics stain batches and
 * scanners that differ in how much of each dye an image shows, which plain HSV jitter does not.
 */

/** Rows: the RGB optical density of one unit of haematoxylin, eosin, DAB. */
const RGB_FROM_HED: readonly (readonly number[])[] = [
  [0.65, 0.7, 0.29],
  [0.07, 0.99, 0.11],
  [0.27, 0.57, 0.78],
];

function invert3(m: readonly (readonly number[])[]): number[][] {
  const [a, b, c] = m[0];
  const [d, e, f] = m[1];
  const [g, h, i] = m[2];
  const A = e * i - f * h;
  const B = -(d * i - f * g);
  const C = d * h - e * g;
  const det = a * A + b * B + c * C;
  return [
    [A / det, -(b * i - c * h) / det, (b * f - c * e) / det],
    [B / det, (a * i - c * g) / det, -(a * f - c * d) / det],
    [C / det, -(a * h - b * g) / det, (a * e - b * d) / det],
  ];
}

const HED_FROM_RGB = invert3(RGB_FROM_HED);

/** One draw of the jitter: per-channel (H, E, D) scale and shift of the concentrations. */
export interface HedJitterParams {
  readonly alpha: readonly [number, number, number];
  readonly beta: readonly [number, number, number];
}

/**
 * Draws alpha from [-sigma, sigma] and beta from [-bias, bias] for each of H, E, D (6 numbers from
 * `rand`, in that order). sigma and bias in [0, 0.5].
 */
export function sampleHedJitter(rand: () => number, sigma: number, bias = sigma): HedJitterParams {
  if (!(sigma >= 0 && sigma <= 0.5)) throw new ValidationError(`HED jitter sigma must be in [0, 0.5], got ${sigma}`);
  if (!(bias >= 0 && bias <= 0.5)) throw new ValidationError(`HED jitter bias must be in [0, 0.5], got ${bias}`);
  const u = Array.from({ length: 6 }, () => 2 * rand() - 1);
  return { alpha: [sigma * u[0], sigma * u[1], sigma * u[2]], beta: [bias * u[3], bias * u[4], bias * u[5]] };
}

const MIN_OD_INPUT = 1 / 255;

/** `p` applied to RGB pixels in [0, 1] (any count, channels last): new pixels, the input is not modified. */
export function applyHedJitter(pixels: RgbPixels, p: HedJitterParams): RgbPixels {
  checkPixels(pixels, 'pixels');
  const M = HED_FROM_RGB;
  const R = RGB_FROM_HED;
  const [a0, a1, a2] = p.alpha;
  const [b0, b1, b2] = p.beta;
  const out = new Float32Array(pixels.length);
  for (let k = 0; k < pixels.length; k += 3) {
    const r = -Math.log(Math.max(pixels[k], MIN_OD_INPUT));
    const g = -Math.log(Math.max(pixels[k + 1], MIN_OD_INPUT));
    const b = -Math.log(Math.max(pixels[k + 2], MIN_OD_INPUT));
    const h = (r * M[0][0] + g * M[1][0] + b * M[2][0]) * (1 + a0) + b0;
    const e = (r * M[0][1] + g * M[1][1] + b * M[2][1]) * (1 + a1) + b1;
    const d = (r * M[0][2] + g * M[1][2] + b * M[2][2]) * (1 + a2) + b2;
    out[k] = clamp01(Math.exp(-(h * R[0][0] + e * R[1][0] + d * R[2][0])));
    out[k + 1] = clamp01(Math.exp(-(h * R[0][1] + e * R[1][1] + d * R[2][1])));
    out[k + 2] = clamp01(Math.exp(-(h * R[0][2] + e * R[1][2] + d * R[2][2])));
  }
  return out;
}
