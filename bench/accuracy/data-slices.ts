/** Slicing one decoded image set into the folds, sites and splits of the accuracy benchmark. */
import type { LabeledImages } from '@histofed/fl-core';
import { augmentImage, augmentationRandom, type AugmentOptions, type BreakHisImage } from '@histofed/data';
import { shareImages } from '@histofed/ml';

/** The decoded images of a dataset with a lookup from each image's path to its row. */
export interface DecodedSet {
  readonly data: LabeledImages;
  readonly rowOf: ReadonlyMap<string, number>;
}

/** Rows `rows` of `data` (in that order) as a new LabeledImages. */
export function takeRows(data: LabeledImages, rows: readonly number[]): LabeledImages {
  const per = data.imageSize * data.imageSize * 3;
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
  };
}

/** The decoded rows of `images` (BreakHisImage objects of the decoded set). */
export function slice(set: DecodedSet, images: readonly BreakHisImage[]): LabeledImages {
  return takeRows(
    set.data,
    images.map((i) => {
      const r = set.rowOf.get(i.path);
      if (r === undefined) throw new Error(`${i.path}: not decoded`);
      return r;
    }),
  );
}

/**
 * The training set with `copies` versions of every image: the original and copies - 1 seeded
 * random augmentations (libs/data augmentImage). fit trains on a fixed set, so augmentation is
 * static: one epoch is `copies` passes over differently augmented versions of the images. The
 * result lives in a SharedArrayBuffer, so the training pool does not copy it per call.
 */
export function augmentedCopies(data: LabeledImages, copies: number, seed: number, options: AugmentOptions): LabeledImages {
  if (copies <= 1) return shareImages(data);
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
