/** Input checks and mini-batch tensors built from slices of a LabeledImages' Float32Array. */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { HEAD_LAYER, SUBTYPE_HEAD_LAYER } from './model-layers';

/** The shape of one input row: an image size (an RGB image [s, s, 3]) or any shape (e.g. [features]). */
export type RowShape = number | readonly number[];

/** The row shape as an array ([s, s, 3] for an image size). */
export function rowShapeOf(shape: RowShape): number[] {
  return typeof shape === 'number' ? [shape, shape, 3] : [...shape];
}

/** Values per row. */
export function rowLengthOf(shape: RowShape): number {
  return rowShapeOf(shape).reduce((a, b) => a * b, 1);
}

/** The shape of one row of `data`: `sampleShape`, else an RGB image of `imageSize`. */
export function dataRowShape(data: Pick<LabeledImages, 'imageSize' | 'sampleShape'>): number[] {
  return data.sampleShape !== undefined ? [...data.sampleShape] : rowShapeOf(data.imageSize);
}

export interface ModelGeometry {
  /** Side of the model's square RGB input, or 0 when its input is not an image (e.g. tile features). */
  readonly imageSize: number;
  /** Shape of one input row (without the batch dimension). */
  readonly inputShape: readonly number[];
  /** Stage-1 classes: the units of the layer 'head' when the model has one, else the output width. */
  readonly numClasses: number;
  /** Subtype classes of a two-stage model (the units of 'subtype_head'), else 0. */
  readonly subtypes: number;
  /** Values per output row: numClasses + subtypes. */
  readonly outputWidth: number;
}

/**
 * Geometry of a classifier: one input of a fixed row shape ([null, s, s, 3] for an image model,
 * [null, d] for heads on tile features), output [null, k] (see models.ts for two-stage rows).
 */
export function modelGeometry(model: tfl.LayersModel): ModelGeometry {
  const inShape = model.inputs[0].shape;
  const outShape = model.outputs[0].shape;
  const outputWidth = outShape[outShape.length - 1];
  const rest = inShape.slice(1);
  if (model.inputs.length !== 1 || rest.length === 0 || rest.some((d) => d === null || d < 1)) {
    throw new ValidationError(`model: expected one input of a fixed shape [null, ...], got [${inShape.join(', ')}]`);
  }
  const inputShape = rest as number[];
  const isImage = inputShape.length === 3 && inputShape[0] === inputShape[1] && inputShape[2] === 3;
  const imageSize = isImage ? inputShape[0] : 0;
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
  return { imageSize, inputShape, numClasses, subtypes, outputWidth };
}

/** Checks that `images` holds `count` rows of `shape`. */
export function checkImages(images: Float32Array, count: number, shape: RowShape, what = 'data'): void {
  if (!Number.isInteger(count) || count < 0) {
    throw new ValidationError(`${what}.count: must be a non-negative integer, got ${count}`);
  }
  const need = count * rowLengthOf(shape);
  if (images.length !== need) {
    const noun = typeof shape === 'number' ? 'images' : 'rows';
    throw new ValidationError(
      `${what}.images: ${count} ${noun} of ${rowShapeOf(shape).join('x')} need ${need} values, got ${images.length}`,
    );
  }
}

/** Throws naming the first image (row) that holds NaN or an infinity. */
export function checkFinite(images: Float32Array, shape: RowShape, what = 'data'): void {
  const per = rowLengthOf(shape);
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
export function checkLabeledImages(data: LabeledImages, shape: RowShape, numClasses: number, what = 'data', subtypes = 0): void {
  const expected = rowShapeOf(shape);
  const actual = dataRowShape(data);
  if (expected.join() !== actual.join()) {
    const isImage = (s: number[]) => s.length === 3 && s[0] === s[1] && s[2] === 3;
    throw new ValidationError(
      isImage(expected) && isImage(actual)
        ? `${what}.imageSize: the model takes ${expected[0]}px images, got ${actual[0]}`
        : `${what}: the model takes rows of ${expected.join('x')}, got ${actual.join('x')}`,
    );
  }
  checkImages(data.images, data.count, actual, what);
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
  if (data.imageOf !== undefined) checkImageOf(data.imageOf, data.count, what);
}

/** imageOf must map every row to an image 0..n-1 with every image present. */
function checkImageOf(imageOf: Int32Array, count: number, what: string): void {
  if (imageOf.length !== count) throw new ValidationError(`${what}.imageOf: expected ${count} entries, got ${imageOf.length}`);
  let max = -1;
  for (let i = 0; i < count; i++) {
    const v = imageOf[i];
    if (!(v >= 0)) throw new ValidationError(`${what}.imageOf[${i}]: ${v} is not an image index`);
    if (v > max) max = v;
  }
  const seen = new Uint8Array(max + 1);
  for (let i = 0; i < count; i++) seen[imageOf[i]] = 1;
  const missing = seen.indexOf(0);
  if (missing >= 0) throw new ValidationError(`${what}.imageOf: image ${missing} has no row`);
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
 * A [n, ...shape] tensor of the rows `order[start..end)` (or start..end when no order), copied
 * out of `images` — only one batch is ever materialised.
 */
export function imageBatch(images: Float32Array, shape: RowShape, start: number, end: number, order?: Int32Array): tf.Tensor {
  const dims = rowShapeOf(shape);
  const per = rowLengthOf(dims);
  const n = end - start;
  if (order === undefined) {
    return tf.tensor(images.slice(start * per, end * per), [n, ...dims]);
  }
  const buf = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const src = order[start + i] * per;
    buf.set(images.subarray(src, src + per), i * per);
  }
  return tf.tensor(buf, [n, ...dims]);
}

/**
 * Image-level view of rows that are tiles of images (`data.imageOf`): per image, its label,
 * patient, subtype and magnification (from its first row). Data without imageOf is returned as is.
 */
export function imageLevel(data: LabeledImages): Omit<LabeledImages, 'images'> & { readonly images: Float32Array } {
  const imageOf = data.imageOf;
  if (imageOf === undefined) return data;
  let n = 0;
  for (let i = 0; i < imageOf.length; i++) if (imageOf[i] + 1 > n) n = imageOf[i] + 1;
  const first = new Int32Array(n).fill(-1);
  for (let i = 0; i < imageOf.length; i++) if (first[imageOf[i]] < 0) first[imageOf[i]] = i;
  const pick = <T>(a: ArrayLike<T>): T[] => Array.from(first, (r) => a[r]);
  return {
    images: new Float32Array(0),
    count: n,
    imageSize: data.imageSize,
    labels: Int32Array.from(first, (r) => data.labels[r]),
    ...(data.subtypes !== undefined ? { subtypes: Int32Array.from(first, (r) => (data.subtypes as Int32Array)[r]) } : {}),
    ...(data.groups !== undefined ? { groups: pick(data.groups) } : {}),
    ...(data.magnifications !== undefined ? { magnifications: pick(data.magnifications) } : {}),
  };
}

/** Mean of the rows' output rows per image (`imageOf`): images x width. */
export function averageRowsPerImage(outputs: Float32Array, width: number, imageOf: Int32Array, images: number): Float32Array {
  const out = new Float32Array(images * width);
  const counts = new Float64Array(images);
  for (let r = 0; r < imageOf.length; r++) {
    const i = imageOf[r];
    counts[i]++;
    for (let k = 0; k < width; k++) out[i * width + k] += outputs[r * width + k];
  }
  for (let i = 0; i < images; i++) for (let k = 0; k < width; k++) out[i * width + k] /= counts[i];
  return out;
}
