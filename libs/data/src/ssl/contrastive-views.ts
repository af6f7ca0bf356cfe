/**
 * Two augmented views of one tile for contrastive self-supervised learning (issue 19; SimCLR:
 * Chen et al. 2020): a tile of the image at a random place, then per view independently a random
 * crop of at least (1 / (1 + maxZoom))² of its area scaled back to the tile size, flips and quarter
 * turns, HSV jitter, HED (stain) jitter and, with probability `blurProbability`, a Gaussian blur —
 * strong enough that the only thing the views share is the tissue itself, as the contrastive loss
 * needs. Deterministic for a generator: the same seed gives the same pair.
 */
import { ValidationError } from '@histofed/fl-core';
import { applyAugmentation, sampleAugmentParams, type AugmentOptions } from '../augmentation';
import { applyHedJitter, sampleHedJitter } from '../stain/hed-jitter';
import { randomOrigin } from '../tiles/tile-geometry';
import { cropTile, type ScaledImage } from '../tiles/tile-reader';

export interface ContrastiveViewOptions {
  /** Geometry and colour of each view (flips, turns, crop zoom up to 1.5, HSV jitter). */
  readonly augment: AugmentOptions;
  /** HED jitter sigma of each view, in [0, 0.5]. */
  readonly hedSigma: number;
  /** Chance that a view is blurred, in [0, 1]. */
  readonly blurProbability: number;
  /** The blur's sigma (pixels) is drawn from [0.1, maxBlurSigma]. */
  readonly maxBlurSigma: number;
}

/** Stronger than the supervised training views' (a contrastive objective needs it), milder on colour than SimCLR's for natural images (H&E colour carries meaning). */
export const CONTRASTIVE_VIEWS: ContrastiveViewOptions = Object.freeze({
  augment: Object.freeze({ flip: true, rotate90: true, maxZoom: 0.5, zoomCrop: 'random' as const, hue: 0.04, saturation: 0.25, brightness: 0.25 }),
  hedSigma: 0.05,
  blurProbability: 0.5,
  maxBlurSigma: 1.5,
});

/** Separable Gaussian blur of a size x size x 3 image in place (edges clamped); returns it. */
export function gaussianBlur(pixels: Float32Array, size: number, sigma: number): Float32Array {
  if (!(sigma > 0) || !Number.isFinite(sigma)) throw new ValidationError(`blur sigma must be a positive number, got ${sigma}`);
  if (pixels.length !== size * size * 3) throw new ValidationError(`pixels hold ${pixels.length} values, expected ${size}x${size}x3`);
  const radius = Math.max(1, Math.ceil(2.5 * sigma));
  const kernel = Array.from({ length: 2 * radius + 1 }, (_, i) => Math.exp(-((i - radius) ** 2) / (2 * sigma * sigma)));
  const total = kernel.reduce((a, b) => a + b, 0);
  for (let i = 0; i < kernel.length; i++) kernel[i] /= total;
  const tmp = new Float32Array(pixels.length);
  const pass = (src: Float32Array, dst: Float32Array, horizontal: boolean) => {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        for (let c = 0; c < 3; c++) {
          let acc = 0;
          for (let k = -radius; k <= radius; k++) {
            const xx = horizontal ? Math.min(size - 1, Math.max(0, x + k)) : x;
            const yy = horizontal ? y : Math.min(size - 1, Math.max(0, y + k));
            acc += kernel[k + radius] * src[(yy * size + xx) * 3 + c];
          }
          dst[(y * size + x) * 3 + c] = acc;
        }
      }
    }
  };
  pass(pixels, tmp, true);
  pass(tmp, pixels, false);
  return pixels;
}

function view(tile: Float32Array, size: number, rand: () => number, o: ContrastiveViewOptions): Float32Array {
  let v = applyAugmentation(Float32Array.from(tile), size, sampleAugmentParams(rand, o.augment));
  if (o.hedSigma > 0) v = Float32Array.from(applyHedJitter(v, sampleHedJitter(rand, o.hedSigma)));
  const blur = rand() < o.blurProbability;
  const sigma = 0.1 + rand() * (o.maxBlurSigma - 0.1);
  return blur ? gaussianBlur(v, size, sigma) : v;
}

/** Two views (each size x size x 3 in [0, 1]) of one random tile of `img`, drawn from `rand`. */
export function contrastivePair(img: ScaledImage, size: number, rand: () => number, o: ContrastiveViewOptions = CONTRASTIVE_VIEWS): { a: Float32Array; b: Float32Array } {
  if (!(o.blurProbability >= 0 && o.blurProbability <= 1)) throw new ValidationError(`blurProbability must be in [0, 1], got ${o.blurProbability}`);
  if (!(o.hedSigma >= 0 && o.hedSigma <= 0.5)) throw new ValidationError(`hedSigma must be in [0, 0.5], got ${o.hedSigma}`);
  if (!(o.maxBlurSigma >= 0.1)) throw new ValidationError(`maxBlurSigma must be >= 0.1, got ${o.maxBlurSigma}`);
  const tile = new Float32Array(size * size * 3);
  cropTile(img, randomOrigin(img.width, img.height, size, rand), size, tile);
  return { a: view(tile, size, rand, o), b: view(tile, size, rand, o) };
}
