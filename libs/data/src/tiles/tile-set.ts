import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import type { BreakHisImage } from '../breakhis-reader';
import { mapWithConcurrency } from '../concurrency';
import { DataError } from '../data-error';
import { subtypeIndex, type ImagePixelHook } from '../image-loader';
import { FeatureCache, featureCacheKey } from './feature-cache';
import { checkTileGeometry, type TileGeometry } from './tile-geometry';
import { decodeScaledImage, gridTiles, scaledImageDimensions, tileOrigins, viewTiles, type ScaledImage, type ViewOptions } from './tile-reader';

/**
 * What a model reads from each tile: a frozen backbone's feature vector (libs/ml supplies one), or
 * nothing (then the rows are the tiles' pixels).
 */
export interface TileRowExtractor {
  /** Identifies the rows' meaning (backbone weights, cut, pixel scaling): part of every cache key. */
  readonly id: string;
  /** Shape of one row, e.g. [384]. */
  readonly rowShape: readonly number[];
  /** `count` tiles of size x size x 3 in [0, 1], back to back, in; count rows out. */
  extract(tiles: Float32Array, count: number, size: number): Promise<Float32Array>;
}

export interface TileSetProgress {
  /** Images done so far, of `total`. */
  readonly images: number;
  readonly total: number;
  /** Rows (tiles) produced so far. */
  readonly rows: number;
  /** Images whose rows came from the cache. */
  readonly cached: number;
}

export interface TileSetOptions {
  readonly geometry: TileGeometry;
  /** The covering grid's tiles of every image (default true): what evaluation reads. */
  readonly grid?: boolean;
  /** Random, optionally augmented training crops per image, after the grid's. */
  readonly views?: ViewOptions;
  /**
   * A per-image pixel transform applied to the whole scaled image before tiling (a simulated site's
   * stain shift, the run's stain normalization); `key` names it in cache keys.
   */
  readonly transform?: { readonly key: string; readonly apply: ImagePixelHook };
  readonly extractor?: TileRowExtractor;
  /** Caches the extractor's rows per image (ignored without an extractor). */
  readonly cache?: FeatureCache;
  /** Images decoded at the same time (default 2). */
  readonly concurrency?: number;
  /** Also return each row's tile centre (LabeledImages.tilePositions), for the bag models. */
  readonly positions?: boolean;
  readonly onProgress?: (p: TileSetProgress) => void;
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The tiles of `images` as one LabeledImages of rows (see fl-core: `imageOf` maps each row to its
 * image, in input order; labels, patients, subtypes and magnifications repeat per row): for each
 * image its grid tiles, then its views — as pixels, or through `extractor` (cached per image when
 * a cache is given). Only a few images are decoded at a time, so memory holds the rows, not the
 * images. Throws DataError naming the file when one cannot be read or decoded.
 */
export async function loadTileSet(images: readonly BreakHisImage[], o: TileSetOptions): Promise<LabeledImages> {
  checkTileGeometry(o.geometry);
  const size = o.geometry.size;
  const grid = o.grid ?? true;
  const views = o.views?.views ?? 0;
  if (!grid && views === 0) throw new ValidationError('tiles: neither the grid nor any view was asked for');
  const rowShape = o.extractor?.rowShape ?? [size, size, 3];
  const rowLength = product(rowShape);
  const cache = o.extractor ? o.cache : undefined;
  let done = 0;
  let rowsSoFar = 0;
  let cached = 0;
  const perImage = await mapWithConcurrency(images, o.concurrency ?? 2, async (image) => {
    let bytes: Buffer;
    try {
      bytes = await readFile(image.path);
    } catch (err) {
      throw new DataError(`Cannot read image ${image.path}: ${(err as Error).message}`);
    }
    const hash = createHash('sha256').update(bytes).digest('hex');
    const key = cache
      ? featureCacheKey({
          format: 'histofed-tile-rows',
          image: hash,
          extractor: o.extractor?.id,
          size,
          scale: o.geometry.scale,
          transform: o.transform?.key ?? null,
          grid,
          views: o.views && views > 0 ? o.views : null,
        })
      : '';
    let rows = cache ? await cache.get(key, rowLength) : undefined;
    let dimensions: { width: number; height: number } | undefined;
    if (rows) cached++;
    else {
      const img = await transformed(await decodeScaledImage(bytes, o.geometry, image.path), image, o.transform?.apply);
      dimensions = { width: img.width, height: img.height };
      const parts: { tiles: Float32Array; count: number }[] = [];
      if (grid) parts.push(gridTiles(img, size));
      if (views > 0 && o.views) parts.push(viewTiles(img, size, hash, o.views));
      const count = parts.reduce((n, p) => n + p.count, 0);
      const tiles = parts.length === 1 ? parts[0].tiles : concat(parts.map((p) => p.tiles));
      const values = o.extractor ? await o.extractor.extract(tiles, count, size) : tiles;
      if (values.length !== count * rowLength) {
        throw new ValidationError(`tile extractor ${o.extractor?.id}: returned ${values.length} values for ${count} tiles of ${rowLength}`);
      }
      rows = { rows: count, values };
      if (cache) await cache.put(key, values, rowLength);
    }
    let positions: Float32Array | undefined;
    if (o.positions) {
      const { width, height } = dimensions ?? (await scaledImageDimensions(bytes, o.geometry, image.path));
      const origins = tileOrigins(width, height, size, { grid, views: o.views ? views : 0, seed: o.views?.seed ?? 0 }, hash);
      if (origins.length !== rows.rows) {
        throw new ValidationError(`tile positions of ${image.path}: ${origins.length} tiles placed for ${rows.rows} rows (a stale feature cache?)`);
      }
      positions = new Float32Array(origins.length * 2);
      origins.forEach((at, k) => {
        positions![k * 2] = (at.y + size / 2) / height;
        positions![k * 2 + 1] = (at.x + size / 2) / width;
      });
    }
    done++;
    rowsSoFar += rows.rows;
    o.onProgress?.({ images: done, total: images.length, rows: rowsSoFar, cached });
    return { ...rows, positions };
  });
  const count = perImage.reduce((n, r) => n + r.rows, 0);
  const values = concat(perImage.map((r) => r.values));
  const imageOf = new Int32Array(count);
  const labels = new Int32Array(count);
  const subtypes = new Int32Array(count);
  const groups: string[] = new Array(count);
  const magnifications: number[] = new Array(count);
  let row = 0;
  perImage.forEach((r, i) => {
    const image = images[i];
    const st = subtypeIndex(image);
    for (let k = 0; k < r.rows; k++, row++) {
      imageOf[row] = i;
      labels[row] = image.labelIndex;
      subtypes[row] = st;
      groups[row] = image.patientId;
      magnifications[row] = image.magnification;
    }
  });
  return {
    images: values,
    labels,
    count,
    imageSize: size,
    groups,
    subtypes,
    magnifications,
    imageOf,
    ...(o.extractor ? { sampleShape: [...rowShape] } : {}),
    ...(o.positions ? { tilePositions: concat(perImage.map((r) => r.positions as Float32Array)) } : {}),
  };
}

async function transformed(img: ScaledImage, image: BreakHisImage, hook: ImagePixelHook | undefined): Promise<ScaledImage> {
  if (!hook) return img;
  const result = hook(img.pixels, image, img.width);
  if (!result || result === img.pixels) return img;
  if (result.length !== img.pixels.length) {
    throw new ValidationError(`transform returned ${result.length} values for ${image.path}, expected ${img.pixels.length}`);
  }
  return { ...img, pixels: result };
}

function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
