import { ValidationError } from '@histofed/fl-core';
import { hashSeed, mulberry32 } from './prng';

// Local aliases: global lookups are slow inside Jest's vm context and these run per pixel.
const { floor, min, max } = Math;

/**
 * Training-time augmentation of one square image. Every field is optional; the defaults
 * (DEFAULT_AUGMENTATION) are mild enough for H&E histology, where orientation carries no meaning
 * but colour does.
 */
export interface AugmentOptions {
  /** Random horizontal and vertical flips, each with probability 1/2. Default true. */
  readonly flip?: boolean;
  /** Random rotation by 0, 90, 180 or 270 degrees (counter-clockwise), equally likely. Default true. */
  readonly rotate90?: boolean;
  /**
   * Zoom in by a factor drawn uniformly from [1, 1 + maxZoom] with bilinear resampling (a crop of
   * side size / factor, scaled back to size). 0 disables. In [0, 0.5]; default 0.1.
   */
  readonly maxZoom?: number;
  /** Where the zoom crop sits: 'random' (uniform over the possible crops, default) or 'centre'. */
  readonly zoomCrop?: 'random' | 'centre';
  /** Hue shift drawn from [-hue, hue], as a fraction of the hue circle. In [0, 0.5]; default 0.02. */
  readonly hue?: number;
  /** Saturation multiplied by a factor from [1 - saturation, 1 + saturation]. In [0, 1]; default 0.1. */
  readonly saturation?: number;
  /** HSV value (brightness) multiplied by a factor from [1 - brightness, 1 + brightness]. In [0, 1]; default 0.1. */
  readonly brightness?: number;
}

export const DEFAULT_AUGMENTATION: Required<AugmentOptions> = Object.freeze({
  flip: true,
  rotate90: true,
  maxZoom: 0.1,
  zoomCrop: 'random',
  hue: 0.02,
  saturation: 0.1,
  brightness: 0.1,
});

/** Options that leave every image unchanged. */
export const NO_AUGMENTATION: Required<AugmentOptions> = Object.freeze({
  flip: false,
  rotate90: false,
  maxZoom: 0,
  zoomCrop: 'centre',
  hue: 0,
  saturation: 0,
  brightness: 0,
});

/** One concrete augmentation, as sampleAugmentParams draws it. */
export interface AugmentParams {
  readonly flipHorizontal: boolean;
  readonly flipVertical: boolean;
  /** Quarter turns counter-clockwise, applied after the flips. */
  readonly rotations: 0 | 1 | 2 | 3;
  /** >= 1; 1 means no zoom. */
  readonly zoom: number;
  /** Crop position in [0, 1] along x and y (0.5 is centred), used when zoom > 1. */
  readonly cropX: number;
  readonly cropY: number;
  /** Added to the hue, as a fraction of the circle. */
  readonly hueShift: number;
  readonly saturationScale: number;
  readonly brightnessScale: number;
}

export const IDENTITY_AUGMENTATION: AugmentParams = Object.freeze({
  flipHorizontal: false,
  flipVertical: false,
  rotations: 0,
  zoom: 1,
  cropX: 0.5,
  cropY: 0.5,
  hueShift: 0,
  saturationScale: 1,
  brightnessScale: 1,
});

/** Defaults filled in and every range checked; throws ValidationError naming a bad field. */
export function resolveAugmentOptions(options: AugmentOptions = {}): Required<AugmentOptions> {
  const o = { ...DEFAULT_AUGMENTATION, ...stripUndefined(options) };
  if (typeof o.flip !== 'boolean') throw new ValidationError(`augment.flip must be a boolean, got ${String(o.flip)}`);
  if (typeof o.rotate90 !== 'boolean') throw new ValidationError(`augment.rotate90 must be a boolean, got ${String(o.rotate90)}`);
  if (o.zoomCrop !== 'random' && o.zoomCrop !== 'centre') {
    throw new ValidationError(`augment.zoomCrop must be 'random' or 'centre', got ${String(o.zoomCrop)}`);
  }
  for (const [name, value, limit] of [
    ['maxZoom', o.maxZoom, 0.5],
    ['hue', o.hue, 0.5],
    ['saturation', o.saturation, 1],
    ['brightness', o.brightness, 1],
  ] as const) {
    if (typeof value !== 'number' || !(value >= 0 && value <= limit)) {
      throw new ValidationError(`augment.${name} must be a number in [0, ${limit}], got ${String(value)}`);
    }
  }
  return o;
}

/**
 * Draws one augmentation. Always takes exactly 9 numbers from `rand`, in a fixed order (flip x,
 * flip y, rotation, zoom, crop x, crop y, hue, saturation, brightness), whatever the options, so
 * switching one option off does not change the others' draws.
 */
export function sampleAugmentParams(rand: () => number, options: AugmentOptions = {}): AugmentParams {
  const o = resolveAugmentOptions(options);
  const u = Array.from({ length: 9 }, () => rand());
  const centred = o.zoomCrop === 'centre';
  return {
    flipHorizontal: o.flip && u[0] < 0.5,
    flipVertical: o.flip && u[1] < 0.5,
    rotations: (o.rotate90 ? min(3, floor(u[2] * 4)) : 0) as 0 | 1 | 2 | 3,
    zoom: 1 + o.maxZoom * u[3],
    cropX: centred ? 0.5 : u[4],
    cropY: centred ? 0.5 : u[5],
    hueShift: o.hue * (2 * u[6] - 1),
    saturationScale: 1 + o.saturation * (2 * u[7] - 1),
    brightnessScale: 1 + o.brightness * (2 * u[8] - 1),
  };
}

/**
 * Augments one size x size x 3 image (floats in [0,1], row-major, channels last) in place and
 * returns it: draws the parameters from `rand` (sampleAugmentParams) and applies them
 * (applyAugmentation). Use augmentationRandom(seed, epoch, imageIndex) for `rand` so that one seed
 * gives the same augmented batch every time.
 */
export function augmentImage(
  pixels: Float32Array,
  size: number,
  rand: () => number,
  options: AugmentOptions = {},
): Float32Array {
  return applyAugmentation(pixels, size, sampleAugmentParams(rand, options));
}

/** The seed of the augmentation of image `imageIndex` in epoch `epoch` of a run seeded `seed`. */
export function augmentationSeed(seed: number, epoch: number, imageIndex: number): number {
  return hashSeed(seed, 'augment', epoch, imageIndex);
}

/** A generator for augmentImage, independent for every (seed, epoch, image index). */
export function augmentationRandom(seed: number, epoch: number, imageIndex: number): () => number {
  return mulberry32(augmentationSeed(seed, epoch, imageIndex));
}

let scratch = new Float32Array(0);

/**
 * Applies `params` to `pixels` (size x size x 3) in place and returns it: zoom crop (bilinear),
 * then horizontal flip, vertical flip, quarter turns counter-clockwise (exact pixel moves), then
 * the HSV colour jitter (hue shift, saturation and value scales, results clamped to [0,1]).
 * Geometry moves or interpolates pixels, so values in [0,1] stay in [0,1].
 */
export function applyAugmentation(pixels: Float32Array, size: number, params: AugmentParams): Float32Array {
  if (!Number.isInteger(size) || size < 1) throw new ValidationError(`size must be a positive integer, got ${size}`);
  if (pixels.length !== size * size * 3) {
    throw new ValidationError(`pixels hold ${pixels.length} values, expected ${size}x${size}x3 = ${size * size * 3}`);
  }
  if (!(params.zoom >= 1) || !Number.isFinite(params.zoom)) throw new ValidationError(`zoom must be >= 1, got ${params.zoom}`);
  const zoomed = params.zoom > 1;
  const moved = params.flipHorizontal || params.flipVertical || params.rotations !== 0;
  if (zoomed || moved) {
    if (scratch.length < pixels.length) scratch = new Float32Array(pixels.length);
    const src = scratch.subarray(0, pixels.length);
    if (zoomed) zoomInto(pixels, src, size, params.zoom, clamp01(params.cropX), clamp01(params.cropY));
    else src.set(pixels);
    permuteInto(src, pixels, size, params);
  }
  if (params.hueShift !== 0 || params.saturationScale !== 1 || params.brightnessScale !== 1) {
    jitterHsv(pixels, params.hueShift, params.saturationScale, params.brightnessScale);
  }
  return pixels;
}

const clamp01 = (v: number): number => (v < 0 ? 0 : v > 1 ? 1 : v);

/** dst = the crop of side size / zoom at (cropX, cropY) of src, resized to size with bilinear sampling. */
function zoomInto(src: Float32Array, dst: Float32Array, size: number, zoom: number, cropX: number, cropY: number): void {
  const side = size / zoom;
  const step = side / size;
  const last = size - 1;
  // Source column of every output column (the same for every row): left index, weight of the right.
  const left = new Int32Array(size);
  const right = new Int32Array(size);
  const wRight = new Float32Array(size);
  const originX = cropX * (size - side);
  for (let x = 0; x < size; x++) {
    const sx = min(last, max(0, originX + (x + 0.5) * step - 0.5));
    left[x] = floor(sx);
    right[x] = min(last, left[x] + 1);
    wRight[x] = sx - left[x];
  }
  const originY = cropY * (size - side);
  for (let y = 0; y < size; y++) {
    const sy = min(last, max(0, originY + (y + 0.5) * step - 0.5));
    const y0 = floor(sy);
    const fy = sy - y0;
    const row0 = y0 * size;
    const row1 = min(last, y0 + 1) * size;
    let o = y * size * 3;
    for (let x = 0; x < size; x++, o += 3) {
      const fx = wRight[x];
      const w00 = (1 - fx) * (1 - fy);
      const w01 = fx * (1 - fy);
      const w10 = (1 - fx) * fy;
      const w11 = fx * fy;
      const a = (row0 + left[x]) * 3;
      const b = (row0 + right[x]) * 3;
      const c = (row1 + left[x]) * 3;
      const d = (row1 + right[x]) * 3;
      for (let ch = 0; ch < 3; ch++) {
        const v = w00 * src[a + ch] + w01 * src[b + ch] + w10 * src[c + ch] + w11 * src[d + ch];
        dst[o + ch] = v < 0 ? 0 : v > 1 ? 1 : v;
      }
    }
  }
}

/** dst = rot90^k(flipV?(flipH?(src))), every pixel moved exactly. */
function permuteInto(src: Float32Array, dst: Float32Array, size: number, p: AugmentParams): void {
  const n1 = size - 1;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      // Undo the rotation: out[y][x] = B[by][bx] where B is the flipped image.
      let by: number;
      let bx: number;
      switch (p.rotations) {
        case 1:
          by = x;
          bx = n1 - y;
          break;
        case 2:
          by = n1 - y;
          bx = n1 - x;
          break;
        case 3:
          by = n1 - x;
          bx = y;
          break;
        default:
          by = y;
          bx = x;
      }
      if (p.flipVertical) by = n1 - by;
      if (p.flipHorizontal) bx = n1 - bx;
      const s = (by * size + bx) * 3;
      const o = (y * size + x) * 3;
      dst[o] = src[s];
      dst[o + 1] = src[s + 1];
      dst[o + 2] = src[s + 2];
    }
  }
}

/** Per pixel: RGB -> HSV, hue + shift (wrapping), saturation and value scaled and clamped, -> RGB. */
function jitterHsv(px: Float32Array, hueShift: number, satScale: number, valScale: number): void {
  for (let k = 0; k < px.length; k += 3) {
    const r = px[k];
    const g = px[k + 1];
    const b = px[k + 2];
    const hi = r > g ? (r > b ? r : b) : g > b ? g : b;
    const lo = r < g ? (r < b ? r : b) : g < b ? g : b;
    const delta = hi - lo;
    let h = 0;
    if (delta > 0) {
      if (hi === r) h = (g - b) / delta;
      else if (hi === g) h = (b - r) / delta + 2;
      else h = (r - g) / delta + 4;
      h /= 6;
    }
    let s = hi > 0 ? delta / hi : 0;
    let v = hi * valScale;
    h += hueShift;
    h -= floor(h);
    s *= satScale;
    s = s < 0 ? 0 : s > 1 ? 1 : s;
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    const h6 = h * 6;
    const i = floor(h6) % 6;
    const f = h6 - floor(h6);
    const pp = v * (1 - s);
    const q = v * (1 - s * f);
    const t = v * (1 - s * (1 - f));
    let ro: number;
    let go: number;
    let bo: number;
    switch (i) {
      case 0:
        ro = v;
        go = t;
        bo = pp;
        break;
      case 1:
        ro = q;
        go = v;
        bo = pp;
        break;
      case 2:
        ro = pp;
        go = v;
        bo = t;
        break;
      case 3:
        ro = pp;
        go = q;
        bo = v;
        break;
      case 4:
        ro = t;
        go = pp;
        bo = v;
        break;
      default:
        ro = v;
        go = pp;
        bo = q;
    }
    px[k] = ro;
    px[k + 1] = go;
    px[k + 2] = bo;
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
