/**
 * Bags of tiles for multiple-instance learning: the tile feature rows of a LabeledImages
 * (`imageOf` maps each row to its image) grouped per image into one zero-padded block
 * [bags, maxTiles, dim] with a mask [bags, maxTiles] (1 = a real tile, 0 = padding).
 *
 * Bag b is image b (imageOf's indices, 0..n-1); a bag's tiles keep their row order and fill its
 * first slots, the padding comes after them, so slicing a batch of bags to its largest bag is exact.
 */
import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';

export interface TileBags {
  /** Number of bags (images). */
  readonly count: number;
  /** Tiles of the largest bag: the padded bag length. */
  readonly maxTiles: number;
  /** Values of one tile's feature vector. */
  readonly dim: number;
  /** [count, maxTiles, dim], zero on padded slots. */
  readonly features: Float32Array;
  /** [count, maxTiles]: 1 for a real tile, 0 for padding. */
  readonly mask: Float32Array;
  /** Real tiles per bag. */
  readonly tileCounts: Int32Array;
  /** [count, maxTiles]: the data row of each slot, -1 on padding (maps attention back to tiles). */
  readonly tileRows: Int32Array;
  /** Stage-1 class per bag. */
  readonly labels: Int32Array;
  /** Subtype per bag, when the rows have subtypes. */
  readonly subtypes?: Int32Array;
  /** Patient per bag, when the rows have groups. */
  readonly groups?: readonly string[];
  /** Magnification per bag, when the rows have them. */
  readonly magnifications?: readonly number[];
}

/**
 * Groups tile feature rows (`data.sampleShape` = [dim], `data.imageOf`) into one bag per image.
 * Throws a ValidationError for data without imageOf, rows that are not feature vectors, an image
 * without rows, or the rows of one image disagreeing on its label, subtype, patient or magnification.
 */
export function bagsFromRows(data: LabeledImages, what = 'data'): TileBags {
  const imageOf = data.imageOf;
  if (imageOf === undefined) {
    throw new ValidationError(
      `${what}.imageOf: attention-MIL pools the tiles of each image, but the rows carry no imageOf (tile rows of images are needed, e.g. a frozen backbone's tile features)`,
    );
  }
  const shape = data.sampleShape;
  if (shape === undefined || shape.length !== 1 || !Number.isInteger(shape[0]) || shape[0] < 1) {
    throw new ValidationError(
      `${what}.sampleShape: attention-MIL reads tile feature vectors [dim], got ${shape === undefined ? `images of ${data.imageSize}px` : `[${shape.join(', ')}]`}`,
    );
  }
  const dim = shape[0];
  const rows = data.count;
  if (!Number.isInteger(rows) || rows < 1) throw new ValidationError(`${what}.count: there are no tile rows (${rows})`);
  if (data.images.length !== rows * dim) {
    throw new ValidationError(`${what}.images: ${rows} rows of ${dim} features need ${rows * dim} values, got ${data.images.length}`);
  }
  if (imageOf.length !== rows) throw new ValidationError(`${what}.imageOf: expected ${rows} entries, got ${imageOf.length}`);
  if (data.labels.length !== rows) throw new ValidationError(`${what}.labels: expected ${rows} values, got ${data.labels.length}`);
  if (data.subtypes !== undefined && data.subtypes.length !== rows) {
    throw new ValidationError(`${what}.subtypes: expected ${rows} values, got ${data.subtypes.length}`);
  }
  if (data.groups !== undefined && data.groups.length !== rows) {
    throw new ValidationError(`${what}.groups: expected ${rows} entries, got ${data.groups.length}`);
  }
  if (data.magnifications !== undefined && data.magnifications.length !== rows) {
    throw new ValidationError(`${what}.magnifications: expected ${rows} entries, got ${data.magnifications.length}`);
  }

  let bags = 0;
  for (let r = 0; r < rows; r++) {
    const b = imageOf[r];
    if (!(Number.isInteger(b) && b >= 0)) throw new ValidationError(`${what}.imageOf[${r}]: ${b} is not an image index`);
    if (b + 1 > bags) bags = b + 1;
  }
  const tileCounts = new Int32Array(bags);
  const first = new Int32Array(bags).fill(-1);
  for (let r = 0; r < rows; r++) {
    const b = imageOf[r];
    if (first[b] < 0) first[b] = r;
    tileCounts[b]++;
  }
  const empty = tileCounts.indexOf(0);
  if (empty >= 0) throw new ValidationError(`${what}.imageOf: image ${empty} has no tile row`);

  const same = <T>(values: ArrayLike<T> | undefined, field: string) => {
    if (values === undefined) return;
    for (let r = 0; r < rows; r++) {
      const f = first[imageOf[r]];
      if (values[r] !== values[f]) {
        throw new ValidationError(
          `${what}.${field}[${r}]: row ${r} of image ${imageOf[r]} has ${String(values[r])}, but the image's first row (${f}) has ${String(values[f])}`,
        );
      }
    }
  };
  same(data.labels, 'labels');
  same(data.subtypes, 'subtypes');
  same(data.groups, 'groups');
  same(data.magnifications, 'magnifications');

  let maxTiles = 0;
  for (let b = 0; b < bags; b++) if (tileCounts[b] > maxTiles) maxTiles = tileCounts[b];
  const features = new Float32Array(bags * maxTiles * dim);
  const mask = new Float32Array(bags * maxTiles);
  const tileRows = new Int32Array(bags * maxTiles).fill(-1);
  const filled = new Int32Array(bags);
  for (let r = 0; r < rows; r++) {
    const b = imageOf[r];
    const slot = b * maxTiles + filled[b]++;
    features.set(data.images.subarray(r * dim, (r + 1) * dim), slot * dim);
    mask[slot] = 1;
    tileRows[slot] = r;
  }
  const pick = <T>(a: ArrayLike<T>): T[] => Array.from(first, (r) => a[r]);
  return {
    count: bags,
    maxTiles,
    dim,
    features,
    mask,
    tileCounts,
    tileRows,
    labels: Int32Array.from(first, (r) => data.labels[r]),
    ...(data.subtypes !== undefined ? { subtypes: Int32Array.from(first, (r) => (data.subtypes as Int32Array)[r]) } : {}),
    ...(data.groups !== undefined ? { groups: pick(data.groups) } : {}),
    ...(data.magnifications !== undefined ? { magnifications: pick(data.magnifications) } : {}),
  };
}

/**
 * The bags `order[start..end)` as [n, T, dim] features and [n, T] mask, where T is the largest of
 * those bags (padding beyond it is dropped: a bag's tiles come first). Plain arrays; the caller
 * makes the tensors.
 */
export function bagBatch(
  bags: TileBags,
  start: number,
  end: number,
  order?: Int32Array,
): { readonly features: Float32Array; readonly mask: Float32Array; readonly tiles: number; readonly indices: Int32Array } {
  const n = end - start;
  const indices = order === undefined ? Int32Array.from({ length: n }, (_, i) => start + i) : order.slice(start, end);
  let tiles = 1;
  for (const b of indices) if (bags.tileCounts[b] > tiles) tiles = bags.tileCounts[b];
  const { dim, maxTiles } = bags;
  const features = new Float32Array(n * tiles * dim);
  const mask = new Float32Array(n * tiles);
  for (let i = 0; i < n; i++) {
    const b = indices[i];
    const used = bags.tileCounts[b];
    features.set(bags.features.subarray(b * maxTiles * dim, (b * maxTiles + used) * dim), i * tiles * dim);
    mask.set(bags.mask.subarray(b * maxTiles, b * maxTiles + used), i * tiles);
  }
  return { features, mask, tiles, indices };
}
