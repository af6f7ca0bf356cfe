/**
 * The tile features of a set of images as benchmarks train on them: the covering grid (evaluation)
 * and the default recipe's augmented training views, through the frozen backbone and the shared
 * feature cache (the same entries as bench:accuracy's and the sites'), with progress lines.
 */
import * as path from 'node:path';
import type { ModelSpec } from '@histofed/fl-core';
import { DEFAULT_AUGMENTATION, FeatureCache, TILE_VIEW_HED_SIGMA, TILE_VIEW_SEED, loadTileSet, type BreakHisImage } from '@histofed/data';
import { tileFeatureExtractor } from '@histofed/ml';
import { rowsByImage, type DecodedSet } from '../accuracy/data-slices';

export interface TileFeatureOptions {
  /** Cache root (features under <dir>/features); default ~/.cache/histofed. */
  readonly cacheDir?: string;
  /** false: compute every feature without the on-disk cache. */
  readonly cache: boolean;
  readonly log: (line: string) => void;
}

/** Grid and view tile features of `images` for a backbone `spec` (its backbone resolved). */
export async function loadTileFeatureSet(images: readonly BreakHisImage[], spec: ModelSpec, o: TileFeatureOptions): Promise<DecodedSet> {
  if (!spec.backbone) throw new Error('loadTileFeatureSet: the model has no backbone');
  const t0 = Date.now();
  const extractor = await tileFeatureExtractor(spec.backbone, spec.imageSize);
  const cache = o.cache ? new FeatureCache(o.cacheDir ? { dir: path.join(o.cacheDir, 'features') } : {}) : undefined;
  const geometry = { size: spec.imageSize, scale: spec.tiles?.scale ?? 1 };
  const progress = (what: string) => (p: { images: number; total: number; cached: number }) => {
    if (p.images % 50 === 0 || p.images === p.total) o.log(`  ${what}: ${p.images}/${p.total} images (${p.cached} cached), ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  };
  const grid = await loadTileSet(images, { geometry, extractor, cache, onProgress: progress('grid tiles') });
  const views = await loadTileSet(images, {
    geometry,
    extractor,
    cache,
    grid: false,
    views: { views: spec.tiles?.views ?? 8, seed: TILE_VIEW_SEED, augment: DEFAULT_AUGMENTATION, hedSigma: TILE_VIEW_HED_SIGMA },
    onProgress: progress('training views'),
  });
  o.log(`tile features: ${grid.count} grid + ${views.count} view tiles in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { data: grid, rowsOf: rowsByImage(grid, images), views: { data: views, rowsOf: rowsByImage(views, images) } };
}
