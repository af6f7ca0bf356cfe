/** Input checks and mini-batch tensors built from slices of a LabeledImages' Float32Array. */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { HEAD_LAYER, SUBTYPE_HEAD_LAYER } from './model-layers';

export interface ModelGeometry {
  readonly imageSize: number;
  /** Stage-1 classes: the units of the layer 'head' when the model has one, else the output width. */
  readonly numClasses: number;
  /** Subtype classes of a two-stage model (the units of 'subtype_head'), else 0. */
  readonly subtypes: number;
  /** Values per output row: numClasses + subtypes. */
  readonly outputWidth: number;
}

/** Geometry of an image classifier: input [null, s, s, 3], output [null, k] (see models.ts for two-stage rows). */
export function modelGeometry(model: tfl.LayersModel): ModelGeometry {
  const inShape = model.inputs[0].shape;
  const outShape = model.outputs[0].shape;
  const imageSize = inShape[1];
  const outputWidth = outShape[outShape.length - 1];
  if (model.inputs.length !== 1 || inShape.length !== 4 || imageSize == null || inShape[2] !== imageSize || inShape[3] !== 3) {
    throw new ValidationError(`model: expected one input of shape [null, s, s, 3], got [${inShape.join(', ')}]`);
  }
  if (model.outputs.length !== 1 || outShape.length !== 2 || outputWidth == null) {
    throw new ValidationError(`model: expected one output of shape [null, classes], got [${outShape.join(', ')}]`);
  }
  const units = (name: string): number | null => {
    const layer = model.layers.find((l) => l.name === name);
    if (layer === undefined) return null;
    const shape = layer.outputShape as (number | null)[];
    return shape[shape.length - 1] ?? null;
  };
  const subtypes = units(SUBTYPE_HEAD_LAYER) ?? 0;
  const numClasses = subtypes > 0 ? (units(HEAD_LAYER) ?? outputWidth - subtypes) : outputWidth;
  if (numClasses + subtypes !== outputWidth) {
    throw new ValidationError(
      `model: the heads '${HEAD_LAYER}' (${numClasses}) and '${SUBTYPE_HEAD_LAYER}' (${subtypes}) do not make up the output width ${outputWidth}`,
    );
  }
  return { imageSize, numClasses, subtypes, outputWidth };
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

/**
 * Checks that `data` agrees with itself and with a model of `numClasses` stage-1 classes and
 * `subtypes` subtype classes (0 for single-stage): a two-stage model needs `data.subtypes`.
 */
export function checkLabeledImages(data: LabeledImages, imageSize: number, numClasses: number, what = 'data', subtypes = 0): void {
  if (data.imageSize !== imageSize) {
    throw new ValidationError(`${what}.imageSize: the model takes ${imageSize}px images, got ${data.imageSize}`);
  }
  checkImages(data.images, data.count, imageSize, what);
  checkIndices(data.labels, data.count, numClasses, `${what}.labels`);
  if (subtypes > 0) {
    if (data.subtypes === undefined) {
      throw new ValidationError(`${what}.subtypes: a two-stage model needs the subtype of every image, none given`);
    }
    checkIndices(data.subtypes, data.count, subtypes, `${what}.subtypes`);
  }
  if (data.groups !== undefined && data.groups.length !== data.count) {
    throw new ValidationError(`${what}.groups: expected ${data.count} entries, got ${data.groups.length}`);
  }
  if (data.magnifications !== undefined && data.magnifications.length !== data.count) {
    throw new ValidationError(`${what}.magnifications: expected ${data.count} entries, got ${data.magnifications.length}`);
  }
}

/** Every image's subtype must belong to its stage-1 class; names the first image that does not. */
export function checkSubtypeParents(data: LabeledImages, subtypeParents: readonly number[], what = 'data'): void {
  const subtypes = data.subtypes;
  if (subtypes === undefined) return;
  for (let i = 0; i < data.count; i++) {
    if (subtypeParents[subtypes[i]] !== data.labels[i]) {
      throw new ValidationError(
        `${what}.subtypes[${i}]: subtype ${subtypes[i]} belongs to class ${subtypeParents[subtypes[i]]}, but the image's label is ${data.labels[i]}`,
      );
    }
  }
}

function checkIndices(values: Int32Array, count: number, classes: number, what: string): void {
  if (values.length !== count) throw new ValidationError(`${what}: expected ${count} values, got ${values.length}`);
  for (let i = 0; i < count; i++) {
    const l = values[i];
    if (!(l >= 0 && l < classes)) throw new ValidationError(`${what}[${i}]: ${l} is not a class index in [0, ${classes})`);
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
