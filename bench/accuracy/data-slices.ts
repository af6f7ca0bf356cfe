/** Slicing one decoded image set into the folds, sites and splits of the accuracy benchmark. */
import type { LabeledImages } from '@histofed/fl-core';
import { augmentImage, augmentationRandom, tileBags, type AugmentOptions, type BreakHisImage } from '@histofed/data';
import { shareImages } from '@histofed/ml';

/**
 * The decoded images (or tile rows) of a dataset with a lookup from each image's path to its rows:
 * one row per image for whole images; for tiles, the image's grid rows (what evaluation reads) and
 * its view rows (random training crops, added to training sets).
 */
export interface DecodedSet {
  readonly data: LabeledImages;
  readonly rowsOf: ReadonlyMap<string, readonly number[]>;
  /** Training crops of each image (tiles only). */
  readonly views?: { readonly data: LabeledImages; readonly rowsOf: ReadonlyMap<string, readonly number[]> };
  /** A bag model's slots per bag: slices are packed into one bag row per image (libs/data tileBags; the rows need tilePositions). */
  readonly bagTiles?: number;
}

/** A DecodedSet's lookup for data in image order (`imageOf`, or one row per image). */
export function rowsByImage(data: LabeledImages, images: readonly BreakHisImage[]): Map<string, number[]> {
  const out = new Map<string, number[]>(images.map((i) => [i.path, []]));
  for (let r = 0; r < data.count; r++) out.get(images[data.imageOf ? data.imageOf[r] : r].path)?.push(r);
  return out;
}

function rowLength(data: LabeledImages): number {
  return (data.sampleShape ?? [data.imageSize, data.imageSize, 3]).reduce((a, b) => a * b, 1);
}

/** Rows `rows` of `data` (in that order) as a new LabeledImages; `imageOf` (when given) numbers the rows' images. */
export function takeRows(data: LabeledImages, rows: readonly number[], imageOf?: readonly number[]): LabeledImages {
  const per = rowLength(data);
  const images = new Float32Array(rows.length * per);
  rows.forEach((r, i) => images.set(data.images.subarray(r * per, (r + 1) * per), i * per));
  return {
    images,
    labels: Int32Array.from(rows, (r) => data.labels[r]),
    count: rows.length,
    imageSize: data.imageSize,
    groups: data.groups ? rows.map((r) => (data.groups as readonly string[])[r]) : undefined,
    subtypes: data.subtypes ? Int32Array.from(rows, (r) => (data.subtypes as Int32Array)[r]) : undefined,
    magnifications: data.magnifications ? rows.map((r) => (data.magnifications as readonly number[])[r]) : undefined,
    ...(data.sampleShape ? { sampleShape: data.sampleShape } : {}),
    ...(imageOf ? { imageOf: Int32Array.from(imageOf) } : {}),
    ...(data.tilePositions ? { tilePositions: Float32Array.from(rows.flatMap((r) => [(data.tilePositions as Float32Array)[r * 2], (data.tilePositions as Float32Array)[r * 2 + 1]])) } : {}),
  };
}

/**
 * The decoded rows of `images` (BreakHisImage objects of the decoded set), in image order; with
 * `withViews`, each image's training views follow its grid rows.
 */
export function slice(set: DecodedSet, images: readonly BreakHisImage[], withViews = false): LabeledImages {
  const tiled = set.data.imageOf !== undefined;
  const rows: number[] = [];
  const imageOf: number[] = [];
  const extra: number[] = [];
  const extraOf: number[] = [];
  images.forEach((img, i) => {
    const r = set.rowsOf.get(img.path);
    if (r === undefined) throw new Error(`${img.path}: not decoded`);
    for (const x of r) {
      rows.push(x);
      imageOf.push(i);
    }
    if (withViews && set.views) {
      for (const x of set.views.rowsOf.get(img.path) ?? []) {
        extra.push(x);
        extraOf.push(i);
      }
    }
  });
  const base = takeRows(set.data, rows, tiled ? imageOf : undefined);
  const all = extra.length === 0 || !set.views ? base : concatRows(base, takeRows(set.views.data, extra, extraOf), false);
  // Training bags drop views beyond the slots (the grid comes first); evaluation bags must hold the whole grid.
  return set.bagTiles === undefined ? all : tileBags(all, { bagTiles: set.bagTiles, overflow: withViews ? 'truncate' : 'error', imageName: (i) => images[i].path });
}

/**
 * The rows of `a` then `b`. With `separateImages` (default), b's images are other images than a's
 * (their imageOf indices are shifted after a's); without, b's rows belong to a's images.
 */
export function concatRows(a: LabeledImages, b: LabeledImages, separateImages = true): LabeledImages {
  const images = new Float32Array(a.images.length + b.images.length);
  images.set(a.images);
  images.set(b.images, a.images.length);
  const cat = <T>(x: readonly T[] | undefined, y: readonly T[] | undefined) => (x && y ? [...x, ...y] : undefined);
  const shift = separateImages && a.imageOf ? Math.max(-1, ...a.imageOf) + 1 : 0;
  return {
    ...a,
    images,
    count: a.count + b.count,
    labels: Int32Array.from([...a.labels, ...b.labels]),
    subtypes: a.subtypes && b.subtypes ? Int32Array.from([...a.subtypes, ...b.subtypes]) : undefined,
    groups: cat(a.groups, b.groups),
    magnifications: cat(a.magnifications, b.magnifications),
    ...(a.imageOf && b.imageOf ? { imageOf: Int32Array.from([...a.imageOf, ...Array.from(b.imageOf, (i) => i + shift)]) } : {}),
    ...(a.tilePositions && b.tilePositions ? { tilePositions: Float32Array.from([...a.tilePositions, ...b.tilePositions]) } : { tilePositions: undefined }),
  };
}

/**
 * The training set with `copies` versions of every image: the original and copies - 1 seeded
 * random augmentations (libs/data augmentImage). fit trains on a fixed set, so augmentation is
 * static: one epoch is `copies` passes over differently augmented versions of the images. The
 * result lives in a SharedArrayBuffer, so the training pool does not copy it per call.
 */
export function augmentedCopies(data: LabeledImages, copies: number, seed: number, options: AugmentOptions): LabeledImages {
  if (copies <= 1) return shareImages(data);
  if (data.sampleShape !== undefined || data.imageOf !== undefined) throw new Error('augmentedCopies: whole images only (tiles have views)');
  const per = data.imageSize * data.imageSize * 3;
  const rows = Array.from({ length: copies * data.count }, (_, i) => i % data.count);
  const out = takeRows(data, rows);
  const images = new Float32Array(new SharedArrayBuffer(out.images.byteLength));
  images.set(out.images);
  for (let i = data.count; i < out.count; i++) {
    augmentImage(images.subarray(i * per, (i + 1) * per), data.imageSize, augmentationRandom(seed, Math.floor(i / data.count), i % data.count), options);
  }
  return { ...out, images };
}
