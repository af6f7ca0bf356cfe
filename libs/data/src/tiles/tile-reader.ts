import sharp from 'sharp';
import { ValidationError } from '@histofed/fl-core';
import { applyAugmentation, sampleAugmentParams, type AugmentOptions } from '../augmentation';
import { DataError } from '../data-error';
import { hashSeed, mulberry32 } from '../prng';
import { applyHedJitter, sampleHedJitter } from '../stain/hed-jitter';
import { gridOrigins, randomOrigin, scaledImageSize, type TileGeometry, type TileOrigin } from './tile-geometry';

/** An image decoded and scaled for tiling: RGB floats in [0, 1], row-major, channels last. */
export interface ScaledImage {
  readonly width: number;
  readonly height: number;
  readonly pixels: Float32Array;
}

/**
 * Decodes an image (a path or its bytes; PNG, JPEG, TIFF, ... whatever sharp reads) to sRGB with 3
 * channels and scales it as `g` says (scaledImageSize; no resampling at scale 1 unless the image is
 * smaller than a tile). Throws DataError naming the file when it cannot be decoded.
 */
export async function decodeScaledImage(input: string | Buffer, g: TileGeometry, name = typeof input === 'string' ? input : '(buffer)'): Promise<ScaledImage> {
  let raw;
  try {
    const meta = await sharp(input).metadata();
    if (!meta.width || !meta.height) throw new Error('no image dimensions');
    const target = scaledImageSize(meta.width, meta.height, g);
    let pipeline = sharp(input).removeAlpha().toColourspace('srgb');
    if (target.width !== meta.width || target.height !== meta.height) {
      pipeline = pipeline.resize(target.width, target.height, { fit: 'fill', kernel: 'lanczos3' });
    }
    raw = await pipeline.raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new DataError(`Cannot decode image ${name}: ${(err as Error).message}`);
  }
  const { info, data } = raw;
  if (info.channels !== 3) throw new DataError(`Cannot decode image ${name}: got ${info.channels} channels, expected 3`);
  const pixels = new Float32Array(data.length);
  for (let k = 0; k < data.length; k++) pixels[k] = data[k] / 255;
  return { width: info.width, height: info.height, pixels };
}

/** Copies the size x size tile at `o` of `img` into `target` at `offset` (floats). */
export function cropTile(img: ScaledImage, o: TileOrigin, size: number, target: Float32Array, offset = 0): void {
  if (o.x < 0 || o.y < 0 || o.x + size > img.width || o.y + size > img.height) {
    throw new ValidationError(`tile at (${o.x}, ${o.y}) of ${size} px leaves the ${img.width}x${img.height} image`);
  }
  const row = size * 3;
  for (let y = 0; y < size; y++) {
    const src = ((o.y + y) * img.width + o.x) * 3;
    target.set(img.pixels.subarray(src, src + row), offset + y * row);
  }
}

/** The covering grid's tiles of `img` (see gridOrigins), back to back. */
export function gridTiles(img: ScaledImage, size: number): { tiles: Float32Array; count: number } {
  const origins = gridOrigins(img.width, img.height, size);
  const per = size * size * 3;
  const tiles = new Float32Array(origins.length * per);
  origins.forEach((o, i) => cropTile(img, o, size, tiles, i * per));
  return { tiles, count: origins.length };
}

/** How the random training views of an image are drawn. */
export interface ViewOptions {
  readonly views: number;
  /** Mixed with the image's key into each view's seed. */
  readonly seed: number;
  /** Flips, quarter turns, zoom and HSV jitter of each view (libs/data augmentation); false = crops only. */
  readonly augment: AugmentOptions | false;
  /** HED jitter strength (sigma = bias), 0 = none. */
  readonly hedSigma: number;
}

/**
 * `o.views` random tiles of `img`: view v draws its position, then its augmentation and HED jitter,
 * from a generator seeded by (seed, imageKey, v) — the same image (by content) gives the same views
 * at every site and in every process, which lets their features be cached.
 */
export function viewTiles(img: ScaledImage, size: number, imageKey: string, o: ViewOptions): { tiles: Float32Array; count: number } {
  if (!Number.isInteger(o.views) || o.views < 0) throw new ValidationError(`views: must be an integer >= 0, got ${o.views}`);
  const per = size * size * 3;
  const tiles = new Float32Array(o.views * per);
  for (let v = 0; v < o.views; v++) {
    const rand = viewRandom(o.seed, imageKey, v);
    const at = randomOrigin(img.width, img.height, size, rand);
    const tile = tiles.subarray(v * per, (v + 1) * per);
    cropTile(img, at, size, tile);
    if (o.augment !== false) applyAugmentation(tile, size, sampleAugmentParams(rand, o.augment));
    if (o.hedSigma > 0) tiles.set(applyHedJitter(tile, sampleHedJitter(rand, o.hedSigma)), v * per);
  }
  return { tiles, count: o.views };
}

/** The generator of view v of an image: its first draws place the tile (randomOrigin), the next ones augment it. */
function viewRandom(seed: number, imageKey: string, v: number): () => number {
  return mulberry32(hashSeed(seed, 'tile-view', imageKey, v));
}

/**
 * Where the rows of an image lie, in the order loadTileSet produces them: the covering grid's
 * origins (when `grid`), then the origins of `views` training views drawn as viewTiles draws them
 * (same seed and image key: the same positions, without decoding the image).
 */
export function tileOrigins(
  width: number,
  height: number,
  size: number,
  o: { readonly grid: boolean; readonly views: number; readonly seed: number },
  imageKey: string,
): TileOrigin[] {
  const out = o.grid ? gridOrigins(width, height, size) : [];
  for (let v = 0; v < o.views; v++) out.push(randomOrigin(width, height, size, viewRandom(o.seed, imageKey, v)));
  return out;
}

/** The size of `input` once scaled for tiling (scaledImageSize of its header's dimensions), without decoding its pixels. */
export async function scaledImageDimensions(input: string | Buffer, g: TileGeometry, name = typeof input === 'string' ? input : '(buffer)'): Promise<{ width: number; height: number }> {
  let meta;
  try {
    meta = await sharp(input).metadata();
  } catch (err) {
    throw new DataError(`Cannot read image ${name}: ${(err as Error).message}`);
  }
  if (!meta.width || !meta.height) throw new DataError(`Cannot read image ${name}: no image dimensions`);
  return scaledImageSize(meta.width, meta.height, g);
}
