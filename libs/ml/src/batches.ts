/** Input checks and mini-batch tensors built from slices of a LabeledImages' Float32Array. */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';

/** Image size and class count of a model built by buildModel (input [null, s, s, 3], output [null, k]). */
export function modelGeometry(model: tfl.LayersModel): { imageSize: number; numClasses: number } {
  const inShape = model.inputs[0].shape;
  const outShape = model.outputs[0].shape;
  const imageSize = inShape[1];
  const numClasses = outShape[outShape.length - 1];
  if (inShape.length !== 4 || imageSize == null || inShape[2] !== imageSize || inShape[3] !== 3) {
    throw new ValidationError(`model: expected an input of shape [null, s, s, 3], got [${inShape.join(', ')}]`);
  }
  if (outShape.length !== 2 || numClasses == null) {
    throw new ValidationError(`model: expected an output of shape [null, classes], got [${outShape.join(', ')}]`);
  }
  return { imageSize, numClasses };
}

/** Checks that the arrays of `data` agree with each other and with the model. */
export function checkImages(images: Float32Array, count: number, imageSize: number, what = 'data'): void {
  if (!Number.isInteger(count) || count < 0) {
    throw new ValidationError(`${what}.count: must be a non-negative integer, got ${count}`);
  }
  const need = count * imageSize * imageSize * 3;
  if (images.length !== need) {
    throw new ValidationError(
      `${what}.images: ${count} images of ${imageSize}x${imageSize}x3 need ${need} values, got ${images.length}`,
    );
  }
}

/** Throws naming the first image that holds NaN or an infinity. */
export function checkFinite(images: Float32Array, imageSize: number, what = 'data'): void {
  const per = imageSize * imageSize * 3;
  for (let i = 0; i < images.length; i++) {
    const v = images[i];
    if (v - v !== 0) {
      throw new ValidationError(`${what}.images: image ${Math.floor(i / per)} holds a non-finite value (${v})`);
    }
  }
}

export function checkLabeledImages(data: LabeledImages, imageSize: number, numClasses: number, what = 'data'): void {
  if (data.imageSize !== imageSize) {
    throw new ValidationError(`${what}.imageSize: the model takes ${imageSize}px images, got ${data.imageSize}`);
  }
  checkImages(data.images, data.count, imageSize, what);
  if (data.labels.length !== data.count) {
    throw new ValidationError(`${what}.labels: expected ${data.count} labels, got ${data.labels.length}`);
  }
  for (let i = 0; i < data.count; i++) {
    const l = data.labels[i];
    if (!(l >= 0 && l < numClasses)) {
      throw new ValidationError(`${what}.labels[${i}]: ${l} is not a class index in [0, ${numClasses})`);
    }
  }
  if (data.groups !== undefined && data.groups.length !== data.count) {
    throw new ValidationError(`${what}.groups: expected ${data.count} entries, got ${data.groups.length}`);
  }
}

/**
 * A [n, s, s, 3] tensor of the images `order[start..end)` (or start..end when no order), copied
 * out of `images` — only one batch is ever materialised.
 */
export function imageBatch(
  images: Float32Array,
  imageSize: number,
  start: number,
  end: number,
  order?: Int32Array,
): tf.Tensor4D {
  const per = imageSize * imageSize * 3;
  const n = end - start;
  if (order === undefined) {
    return tf.tensor4d(images.slice(start * per, end * per), [n, imageSize, imageSize, 3]);
  }
  const buf = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const src = order[start + i] * per;
    buf.set(images.subarray(src, src + per), i * per);
  }
  return tf.tensor4d(buf, [n, imageSize, imageSize, 3]);
}
