import type { LabeledImages } from '@histofed/fl-core';
import { BREAKHIS_SUBTYPE_CODES, ValidationError } from '@histofed/fl-core';
import type { BreakHisImage } from './breakhis-reader';
import { mapWithConcurrency } from './concurrency';
import { decodeSquareRgb, type ImageCache } from './image-cache';

/**
 * A per-image pixel hook, e.g. a per-site stain shift or stain normalization: receives one image
 * as size*size*3 floats in [0,1] (row-major, channels last) and either modifies them in place or
 * returns new pixels of the same length (so the stain module's `(pixels) => pixels` transforms,
 * such as createStainNormalizer(target), plug in directly). Called after scaling to [0,1] and
 * before any augmentation. Keeping values in [0,1] is the hook's job.
 */
export type ImagePixelHook = (rgb: Float32Array, image: BreakHisImage, imageSize: number) => Float32Array | void;

export interface LoadImagesOptions {
  /** Files decoded at the same time (default 4). */
  readonly concurrency?: number;
  /** Decoded images are read from / stored in this on-disk cache (its resize mode applies). */
  readonly cache?: ImageCache;
  /** Applied to each image after scaling to [0,1]. */
  readonly transform?: ImagePixelHook;
}

/** Stage-2 label of an image: the index of its subtype code in BREAKHIS_SUBTYPE_CODES. */
export function subtypeIndex(image: Pick<BreakHisImage, 'subtype' | 'path'>): number {
  const i = (BREAKHIS_SUBTYPE_CODES as readonly string[]).indexOf(image.subtype);
  if (i < 0) throw new ValidationError(`${image.path}: unknown subtype "${image.subtype}"`);
  return i;
}

/**
 * Decodes `images` into one LabeledImages batch, in input order.
 *
 * Each PNG is converted to sRGB with 3 channels (alpha dropped, greyscale expanded) and resized to
 * imageSize x imageSize with fit 'cover': the aspect ratio is kept and the centre square is used
 * (a 700x460 BreakHis image keeps its central 460x460), so nuclei are not stretched. Values are
 * bytes / 255, channels last, row-major, then `options.transform` if given. labels are labelIndex
 * (0 benign, 1 malignant); groups are the patient ids (slide codes); subtypes the index of the
 * subtype in BREAKHIS_SUBTYPE_CODES; magnifications 40/100/200/400. With `options.cache` the
 * decoded bytes come from (and go to) the cache, and its path index is flushed at the end.
 *
 * Throws DataError naming the file when one cannot be decoded.
 */
export async function loadLabeledImages(
  images: readonly BreakHisImage[],
  imageSize: number,
  options: LoadImagesOptions = {},
): Promise<LabeledImages> {
  if (!Number.isInteger(imageSize) || imageSize < 1) {
    throw new ValidationError(`imageSize must be a positive integer, got ${imageSize}`);
  }
  const perImage = imageSize * imageSize * 3;
  const data = new Float32Array(images.length * perImage);
  try {
    await mapWithConcurrency(images, options.concurrency ?? 4, async (image, index) => {
      const offset = index * perImage;
      await readImagePixels(image, imageSize, data.subarray(offset, offset + perImage), options);
    });
  } finally {
    await options.cache?.flush();
  }
  return {
    images: data,
    labels: Int32Array.from(images, (i) => i.labelIndex),
    count: images.length,
    imageSize,
    groups: images.map((i) => i.patientId),
    subtypes: Int32Array.from(images, (i) => subtypeIndex(i)),
    magnifications: images.map((i) => i.magnification),
  };
}

/**
 * Decodes one image (through `options.cache` when given) into `target` (imageSize*imageSize*3
 * floats): bytes / 255, then `options.transform` (its result copied into `target` when it returns
 * new pixels). Throws DataError naming the file on failure.
 */
export async function readImagePixels(
  image: BreakHisImage,
  imageSize: number,
  target: Float32Array,
  options: { readonly cache?: ImageCache; readonly transform?: ImagePixelHook } = {},
): Promise<void> {
  const perImage = imageSize * imageSize * 3;
  if (target.length !== perImage) {
    throw new ValidationError(`target holds ${target.length} values, expected ${perImage}`);
  }
  const pixels = options.cache ? await options.cache.get(image, imageSize) : await decodeSquareRgb(image.path, imageSize);
  for (let k = 0; k < perImage; k++) target[k] = pixels[k] / 255;
  const result = options.transform?.(target, image, imageSize);
  if (result && result !== target) {
    if (result.length !== perImage) {
      throw new ValidationError(`transform returned ${result.length} values for ${image.path}, expected ${perImage}`);
    }
    target.set(result);
  }
}
