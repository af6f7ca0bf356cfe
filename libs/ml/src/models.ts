/**
 * Model architectures, selected by `ModelSpec.kind`.
 *
 * Every layer has an explicit, fixed name ('conv1', 'head', ...) so that weight names
 * ('conv1/kernel') are identical in every model instance and process; tfjs would otherwise number
 * them per process ('conv2d_7'). Initialisation is deterministic from the seed.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { assertBackendReady } from './backend';

export const MODEL_KINDS = ['small-cnn'] as const;
export type ModelKind = (typeof MODEL_KINDS)[number];
export const DEFAULT_MODEL_KIND: ModelKind = 'small-cnn';

export const MIN_IMAGE_SIZE = 16;
export const MAX_IMAGE_SIZE = 512;

/**
 * Options of 'small-cnn' (all numbers, as `ModelSpec.options`):
 * - width (default 1): multiplies the filter counts 16/32/64
 * - denseUnits (default 64): units of the hidden dense layer
 * - dropout (default 0.25): dropout rate before the head, in [0, 1)
 * - batchNorm (default 0): 1 adds batch normalisation after each convolution (for FedBN)
 */
export const SMALL_CNN_OPTIONS = ['width', 'denseUnits', 'dropout', 'batchNorm'] as const;

interface SmallCnnOptions {
  width: number;
  denseUnits: number;
  dropout: number;
  batchNorm: boolean;
}

function smallCnnOptions(options: Readonly<Record<string, number>> | undefined): SmallCnnOptions {
  const o = options ?? {};
  for (const key of Object.keys(o)) {
    if (!(SMALL_CNN_OPTIONS as readonly string[]).includes(key)) {
      throw new ValidationError(
        `model.options.${key}: unknown option for small-cnn (known: ${SMALL_CNN_OPTIONS.join(', ')})`,
      );
    }
  }
  const width = o['width'] ?? 1;
  if (!Number.isFinite(width) || width <= 0 || width > 16) {
    throw new ValidationError(`model.options.width: must be a number in (0, 16], got ${width}`);
  }
  const denseUnits = o['denseUnits'] ?? 64;
  if (!Number.isInteger(denseUnits) || denseUnits < 1 || denseUnits > 4096) {
    throw new ValidationError(`model.options.denseUnits: must be an integer in [1, 4096], got ${denseUnits}`);
  }
  const dropout = o['dropout'] ?? 0.25;
  if (!Number.isFinite(dropout) || dropout < 0 || dropout >= 1) {
    throw new ValidationError(`model.options.dropout: must be in [0, 1), got ${dropout}`);
  }
  const batchNorm = o['batchNorm'] ?? 0;
  if (batchNorm !== 0 && batchNorm !== 1) {
    throw new ValidationError(`model.options.batchNorm: must be 0 or 1, got ${batchNorm}`);
  }
  return { width, denseUnits, dropout, batchNorm: batchNorm === 1 };
}

/** Checks a ModelSpec; throws a ValidationError naming the field. */
export function validateModelSpec(spec: ModelSpec): void {
  const kind = spec.kind ?? DEFAULT_MODEL_KIND;
  if (!(MODEL_KINDS as readonly string[]).includes(kind)) {
    throw new ValidationError(`model.kind: unknown model kind "${kind}" (known: ${MODEL_KINDS.join(', ')})`);
  }
  if (!Number.isInteger(spec.imageSize) || spec.imageSize < MIN_IMAGE_SIZE || spec.imageSize > MAX_IMAGE_SIZE) {
    throw new ValidationError(
      `model.imageSize: must be an integer in [${MIN_IMAGE_SIZE}, ${MAX_IMAGE_SIZE}], got ${spec.imageSize}`,
    );
  }
  if (!Number.isInteger(spec.numClasses) || spec.numClasses < 2) {
    throw new ValidationError(`model.numClasses: must be an integer >= 2, got ${spec.numClasses}`);
  }
  smallCnnOptions(spec.options);
}

function buildSmallCnn(spec: ModelSpec, seed: number): tfl.LayersModel {
  const o = smallCnnOptions(spec.options);
  let nextSeed = seed;
  const init = () => tfl.initializers.glorotUniform({ seed: nextSeed++ });
  const model = tfl.sequential({ name: 'small_cnn' });
  const filters = [16, 32, 64].map((f) => Math.max(1, Math.round(f * o.width)));
  filters.forEach((f, i) => {
    const n = i + 1;
    model.add(
      tfl.layers.conv2d({
        name: `conv${n}`,
        ...(i === 0 ? { inputShape: [spec.imageSize, spec.imageSize, 3] } : {}),
        filters: f,
        kernelSize: 3,
        padding: 'same',
        activation: o.batchNorm ? 'linear' : 'relu',
        useBias: !o.batchNorm,
        kernelInitializer: init(),
        biasInitializer: 'zeros',
      }),
    );
    if (o.batchNorm) {
      model.add(tfl.layers.batchNormalization({ name: `bn${n}`, momentum: 0.9 }));
      model.add(tfl.layers.activation({ name: `relu${n}`, activation: 'relu' }));
    }
    model.add(tfl.layers.maxPooling2d({ name: `pool${n}`, poolSize: 2 }));
  });
  // Global average pooling keeps the parameter count independent of the image size.
  model.add(tfl.layers.globalAveragePooling2d({ name: 'gap' }));
  model.add(
    tfl.layers.dense({
      name: 'fc1',
      units: o.denseUnits,
      activation: 'relu',
      kernelInitializer: init(),
      biasInitializer: 'zeros',
    }),
  );
  if (o.dropout > 0) model.add(tfl.layers.dropout({ name: 'dropout', rate: o.dropout }));
  model.add(
    tfl.layers.dense({
      name: 'head',
      units: spec.numClasses,
      activation: 'softmax',
      kernelInitializer: init(),
      biasInitializer: 'zeros',
    }),
  );
  return model;
}

/**
 * Builds a fresh model for `spec` (kind defaults to 'small-cnn'). Models built from the same spec
 * and seed have identical weight names and values. The caller owns the model (`model.dispose()`).
 */
export function buildModel(spec: ModelSpec, seed = 1): tfl.LayersModel {
  validateModelSpec(spec);
  if (!Number.isInteger(seed)) throw new ValidationError(`seed: must be an integer, got ${seed}`);
  assertBackendReady();
  const kind = (spec.kind ?? DEFAULT_MODEL_KIND) as ModelKind;
  switch (kind) {
    case 'small-cnn':
      return buildSmallCnn(spec, seed);
  }
}

export interface ModelDescription {
  readonly parameters: number;
  readonly trainableParameters: number;
  readonly layers: readonly { readonly name: string; readonly type: string; readonly outputShape: string; readonly parameters: number }[];
}

/** Parameter counts and the layer list, for logs and the API. */
export function describeModel(model: tfl.LayersModel): ModelDescription {
  const layers = model.layers.map((l) => ({
    name: l.name,
    type: l.getClassName(),
    outputShape: JSON.stringify(l.outputShape),
    parameters: l.countParams(),
  }));
  const count = (vars: readonly tfl.LayerVariable[]) => vars.reduce((n, v) => n + v.read().size, 0);
  return {
    parameters: count(model.weights),
    trainableParameters: count(model.trainableWeights),
    layers,
  };
}
