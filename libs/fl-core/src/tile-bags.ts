/**
 * Bags of tiles: the input rows of the multiple-instance models (attention-MIL, the transformer
 * over tiles). One row per image, `bagTiles` slots; slot k holds one tile of the image:
 *
 *   [f_0 … f_{F-1}, mask, y, x]      (F + BAG_SLOT_EXTRA values)
 *
 * f = the tile's feature vector (a frozen backbone's), mask = 1 for a tile and 0 for padding (the
 * slot is then all zeros), (y, x) = the tile's centre as a fraction of the (scaled) image's height
 * and width, in [0, 1]. An image's grid tiles fill the first slots in row-major grid order, its
 * training views follow, padding comes last. libs/data builds the rows (loadModelInputs), libs/ml
 * reads them (the models' input is [bagTiles, F + BAG_SLOT_EXTRA]).
 */
import type { ModelSpec } from './run-types';

/** Values after the features in every slot: mask, y, x. */
export const BAG_SLOT_EXTRA = 3;
/** Offsets within a slot, counted from its feature count F. */
export const BAG_MASK_OFFSET = 0;
export const BAG_Y_OFFSET = 1;
export const BAG_X_OFFSET = 2;

/** Model kinds that read bags of tiles (one row per image) rather than one row per tile. */
export const BAG_MODEL_KINDS = ['attention-mil', 'transformer-mil'] as const;
export type BagModelKind = (typeof BAG_MODEL_KINDS)[number];

/** Slots per bag unless `options.bagTiles` says otherwise; the largest allowed. */
export const DEFAULT_BAG_TILES = 32;
export const MAX_BAG_TILES = 256;

/** True when the spec's model reads bags of tiles. */
export function isBagModel(spec: Pick<ModelSpec, 'kind'>): boolean {
  return (BAG_MODEL_KINDS as readonly string[]).includes(spec.kind);
}

/** Slots per bag of a bag model's spec (options.bagTiles, else DEFAULT_BAG_TILES). */
export function bagTilesOf(spec: Pick<ModelSpec, 'options'>): number {
  return spec.options?.['bagTiles'] ?? DEFAULT_BAG_TILES;
}
