/**
 * Bag rows for the multiple-instance models (fl-core tile-bags.ts): the tile feature rows of each
 * image, with their positions and a mask, packed into one row of `bagTiles` slots.
 */
import type { LabeledImages } from '@histofed/fl-core';
import { BAG_MASK_OFFSET, BAG_SLOT_EXTRA, BAG_X_OFFSET, BAG_Y_OFFSET, MAX_BAG_TILES, ValidationError } from '@histofed/fl-core';

export interface TileBagOptions {
  /** Slots per bag. */
  readonly bagTiles: number;
  /**
   * An image with more rows than slots: 'error' (evaluation: every grid tile must count) throws a
   * ValidationError naming the image; 'truncate' (training) keeps its first rows — the grid's
   * tiles come first, so views are dropped before grid tiles.
   */
  readonly overflow: 'error' | 'truncate';
  /** Names image i in errors (e.g. its file), default `image i`. */
  readonly imageName?: (image: number) => string;
}

/**
 * One bag row per image from tile feature rows with `imageOf` and `tilePositions` (loadTileSet
 * with `positions`); several row sets of the same images (e.g. the grid, then the views) are
 * concatenated per image in the order given. Images keep their indices; labels, patients,
 * subtypes and magnifications are the image's. The result has no imageOf (a row is an image).
 */
export function tileBags(parts: LabeledImages | readonly LabeledImages[], o: TileBagOptions): LabeledImages {
  const sets = Array.isArray(parts) ? (parts as readonly LabeledImages[]) : [parts as LabeledImages];
  if (sets.length === 0) throw new ValidationError('tile bags: no tile rows');
  if (!Number.isInteger(o.bagTiles) || o.bagTiles < 1 || o.bagTiles > MAX_BAG_TILES) {
    throw new ValidationError(`model.options.bagTiles: must be an integer in [1, ${MAX_BAG_TILES}], got ${o.bagTiles}`);
  }
  const name = o.imageName ?? ((i: number) => `image ${i}`);
  const dim = featureCount(sets[0], 0);
  let images = 0;
  sets.forEach((set, s) => {
    if (featureCount(set, s) !== dim) throw new ValidationError(`tile bags: row set ${s} has ${featureCount(set, s)} features per tile, set 0 has ${dim}`);
    const imageOf = set.imageOf as Int32Array;
    for (let r = 0; r < imageOf.length; r++) if (imageOf[r] + 1 > images) images = imageOf[r] + 1;
  });
  // Rows of each image, in set order then row order.
  const rowsOf: { set: number; row: number }[][] = Array.from({ length: images }, () => []);
  sets.forEach((set, s) => {
    const imageOf = set.imageOf as Int32Array;
    for (let r = 0; r < imageOf.length; r++) rowsOf[imageOf[r]].push({ set: s, row: r });
  });
  const slot = dim + BAG_SLOT_EXTRA;
  const rowLength = o.bagTiles * slot;
  const values = new Float32Array(images * rowLength);
  const labels = new Int32Array(images);
  const first = sets[0];
  const subtypes = first.subtypes ? new Int32Array(images) : undefined;
  const groups: string[] | undefined = first.groups ? new Array(images) : undefined;
  const magnifications: number[] | undefined = first.magnifications ? new Array(images) : undefined;
  for (let i = 0; i < images; i++) {
    const rows = rowsOf[i];
    if (rows.length === 0) throw new ValidationError(`tile bags: ${name(i)} has no tile rows`);
    if (rows.length > o.bagTiles && o.overflow === 'error') {
      throw new ValidationError(
        `tile bags: ${name(i)} has ${rows.length} tiles, the model's bags hold ${o.bagTiles} (raise model.options.bagTiles, or tile at a smaller scale)`,
      );
    }
    const head = sets[rows[0].set];
    const r0 = rows[0].row;
    labels[i] = head.labels[r0];
    if (subtypes) subtypes[i] = head.subtypes?.[r0] ?? -1;
    if (groups) groups[i] = head.groups?.[r0] ?? '';
    if (magnifications) magnifications[i] = head.magnifications?.[r0] ?? 0;
    rows.slice(0, o.bagTiles).forEach(({ set, row }, k) => {
      const src = sets[set];
      if (src.labels[row] !== labels[i]) throw new ValidationError(`tile bags: the rows of ${name(i)} disagree on its label`);
      const at = i * rowLength + k * slot;
      values.set(src.images.subarray(row * dim, (row + 1) * dim), at);
      values[at + dim + BAG_MASK_OFFSET] = 1;
      values[at + dim + BAG_Y_OFFSET] = (src.tilePositions as Float32Array)[row * 2];
      values[at + dim + BAG_X_OFFSET] = (src.tilePositions as Float32Array)[row * 2 + 1];
    });
  }
  return {
    images: values,
    labels,
    count: images,
    imageSize: first.imageSize,
    sampleShape: [o.bagTiles, slot],
    ...(subtypes ? { subtypes } : {}),
    ...(groups ? { groups } : {}),
    ...(magnifications ? { magnifications } : {}),
  };
}

function featureCount(set: LabeledImages, s: number): number {
  const what = `tile bags: row set ${s}`;
  if (set.imageOf === undefined) throw new ValidationError(`${what}: the rows carry no imageOf (tile rows of images are needed)`);
  if (set.tilePositions === undefined || set.tilePositions.length !== set.count * 2) {
    throw new ValidationError(`${what}: the rows carry no tile positions (load the tiles with positions)`);
  }
  const shape = set.sampleShape;
  if (shape === undefined || shape.length !== 1 || !Number.isInteger(shape[0]) || shape[0] < 1) {
    throw new ValidationError(`${what}: bag models read tile feature vectors [features], got ${shape === undefined ? 'pixels' : `rows of [${shape.join(', ')}]`}`);
  }
  if (set.images.length !== set.count * shape[0]) throw new ValidationError(`${what}: ${set.count} rows of ${shape[0]} features need ${set.count * shape[0]} values, got ${set.images.length}`);
  return shape[0];
}
