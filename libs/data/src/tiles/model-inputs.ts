import type { LabeledImages, ModelSpec } from '@histofed/fl-core';
import { ValidationError, bagTilesOf, isBagModel } from '@histofed/fl-core';
import { DEFAULT_AUGMENTATION } from '../augmentation';
import type { BreakHisImage } from '../breakhis-reader';
import type { ImageCache } from '../image-cache';
import { loadLabeledImages, type ImagePixelHook } from '../image-loader';
import type { FeatureCache } from './feature-cache';
import { tileBags } from './tile-bags';
import { withClinical } from '../clinical/clinical-rows';
import type { ClinicalTable } from '../clinical/clinical-table';
import { loadTileSet, type TileRowExtractor, type TileSetProgress } from './tile-set';

/** HED jitter of augmented training views (Tellez et al.'s "light" setting). */
export const TILE_VIEW_HED_SIGMA = 0.05;
/**
 * Seed of the training views: fixed, so an image's views (and their cached features) are the same
 * in every round and run; `augment` decides whether they are also flipped, rotated and colour-jittered.
 */
export const TILE_VIEW_SEED = 1;

export interface ModelInputOptions {
  /** Training inputs (grid + the spec's views) rather than evaluation inputs (the grid). */
  readonly training?: boolean;
  /** Training views are augmented (flips, quarter turns, zoom, HSV and HED jitter). */
  readonly augment?: boolean;
  /** HED jitter of augmented views (stain augmentation), sigma in [0, 0.5]; default TILE_VIEW_HED_SIGMA. */
  readonly hedSigma?: number;
  /** A frozen backbone's tile features (spec.backbone); absent: rows are pixels. */
  readonly extractor?: TileRowExtractor;
  readonly featureCache?: FeatureCache;
  /** Whole-image specs: decoded-image cache. */
  readonly imageCache?: ImageCache;
  /** Per-image pixel transform (stain shift, stain normalization); `key` names it in cache keys. */
  readonly transform?: { readonly key: string; readonly apply: ImagePixelHook };
  readonly onProgress?: (p: TileSetProgress) => void;
  /**
   * A fusion spec's (spec.clinical) clinical table, checked against that declaration (readClinicalCsv):
   * each row is followed by its patient's encoded record. Absent: every patient's row carries the
   * no-record encoding (the learned missing path).
   */
  readonly clinical?: ClinicalTable;
}

/**
 * What of a spec decides what loadModelInputs returns (with the extractor, the transform and the
 * training flags): the part of a key for caches of loaded inputs.
 */
export function modelInputsKey(spec: ModelSpec): unknown[] {
  return [spec.imageSize, spec.tiles ?? null, isBagModel(spec) ? { bagTiles: bagTilesOf(spec) } : null, spec.clinical ?? null];
}

/**
 * What a model of `spec` reads from `images`: for a tiled spec, the tile rows (features through
 * `extractor`, or pixels) — the covering grid, plus the spec's random views when training; else the
 * whole images resized to the input size; for a bag model (attention-MIL, the transformer over
 * tiles) the tile rows of each image packed into one bag row (tileBags: a training bag holds the
 * grid and the views, an evaluation bag the grid); for a fusion spec (spec.clinical) each row is
 * followed by its patient's encoded record (withClinical). One function for sites, the coordinator, the
 * CLIs and the benchmarks, so every consumer tiles the same way.
 */
export async function loadModelInputs(images: readonly BreakHisImage[], spec: ModelSpec, o: ModelInputOptions = {}): Promise<LabeledImages> {
  if (spec.clinical && (spec.tiles === undefined || isBagModel(spec))) {
    throw new ValidationError(`model.clinical: fusion with a clinical record reads tile rows of kind backbone-head, not ${spec.tiles === undefined ? 'whole images' : 'tile bags'}`);
  }
  if (spec.tiles === undefined) {
    return loadLabeledImages(images, spec.imageSize, { cache: o.imageCache, transform: o.transform?.apply });
  }
  const views = o.training ? spec.tiles.views : 0;
  const bags = isBagModel(spec);
  const rows = await loadTileSet(images, {
    geometry: { size: spec.imageSize, scale: spec.tiles.scale },
    grid: true,
    ...(views > 0
      ? { views: { views, seed: TILE_VIEW_SEED, augment: o.augment ? DEFAULT_AUGMENTATION : false, hedSigma: o.augment ? (o.hedSigma ?? TILE_VIEW_HED_SIGMA) : 0 } }
      : {}),
    transform: o.transform,
    extractor: o.extractor,
    cache: o.featureCache,
    positions: bags,
    onProgress: o.onProgress,
  });
  if (!bags) return spec.clinical ? withClinical(rows, o.clinical, spec.clinical, 'tile rows') : rows;
  return tileBags(rows, { bagTiles: bagTilesOf(spec), overflow: o.training ? 'truncate' : 'error', imageName: (i) => images[i].path });
}
