import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import sharp from 'sharp';
import type { BreakHisImage } from './breakhis-reader';
import { mapWithConcurrency } from './concurrency';
import { DataError } from './data-error';

export interface LoadImagesOptions {
  /** Files decoded at the same time (default 4). */
  readonly concurrency?: number;
}

/**
 * Decodes `images` into one LabeledImages batch, in input order.
 *
 * Each PNG is converted to sRGB with 3 channels (alpha dropped, greyscale expanded) and resized to
 * imageSize x imageSize with fit 'cover': the aspect ratio is kept and the centre square is used
 * (a 700x460 BreakHis image keeps its central 460x460), so nuclei are not stretched. Values are
 * bytes / 255, channels last, row-major. labels are labelIndex (0 benign, 1 malignant); groups are
 * the patient ids (slide codes).
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
  await mapWithConcurrency(images, options.concurrency ?? 4, async (image, index) => {
    const pixels = await decodeSquare(image.path, imageSize);
    const offset = index * perImage;
    for (let k = 0; k < perImage; k++) data[offset + k] = pixels[k] / 255;
  });
  return {
    images: data,
    labels: Int32Array.from(images, (i) => i.labelIndex),
    count: images.length,
    imageSize,
    groups: images.map((i) => i.patientId),
  };
}

async function decodeSquare(file: string, size: number): Promise<Buffer> {
  let result;
  try {
    result = await sharp(file)
      .removeAlpha()
      .toColourspace('srgb')
      .resize(size, size, { fit: 'cover', position: 'centre' })
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new DataError(`Cannot decode image ${file}: ${(err as Error).message}`);
  }
  const { info, data } = result;
  if (info.width !== size || info.height !== size || info.channels !== 3) {
    throw new DataError(
      `Cannot decode image ${file}: got ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x3`,
    );
  }
  return data;
}
