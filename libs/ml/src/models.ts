/**
 * Model architectures, selected by `ModelSpec.kind`:
 *
 * - `se-cnn` (the default): conv blocks 3x3 conv -> ReLU -> squeeze-and-excitation -> 2x2 max
 *   pool (Hu et al. 2018: the block's channels are re-weighted by a gate computed from their global
 *   averages through a bottleneck of channels / seRatio units).
 * - `attention-cnn`: as se-cnn plus CBAM-style spatial attention after the SE gate (Woo et al.
 *   2018: the channel-wise mean and max maps -> a 7x7 convolution -> sigmoid -> multiplies every
 *   pixel), so the network can attend to nuclei-rich regions.
 * - `small-cnn`: the plain baseline without gates.
 *
 * All start by centring the input (x * 2 - 1, layer `center`) and share the head: global average pooling (the parameter count does not depend on the image
 * size) -> dense `fc1` (ReLU) -> dropout -> `head` (softmax over the stage-1 classes). A two-stage
 * spec (`subtypeParents`) adds `subtype_head` (softmax over the subtypes) on the same features and
 * concatenates both into one output row [stage-1 probabilities, subtype probabilities] (layer
 * `outputs`): a shared backbone with two heads, trained on the sum of both cross-entropies
 * (losses.ts), read as a cascade (the stage-1 arg-max picks the class, the subtype is the arg-max
 * among that class's subtypes: stage-metrics.ts).
 *
 * Every layer has an explicit, fixed name ('conv1', 'se1_reduce', 'head', ...) so that weight names
 * ('conv1/kernel') are identical in every model instance and process; tfjs would otherwise number
 * them per process ('conv2d_7'). Initialisation is deterministic from the seed.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec } from '@histofed/fl-core';
import { BAG_MODEL_KINDS, ValidationError, isBagModel, isTwoStage, type BagModelKind } from '@histofed/fl-core';
import { assertBackendReady } from './backend';
import { ChannelPool } from './channel-pool-layer';
import { HEAD_LAYER, OUTPUT_LAYER, SUBTYPE_HEAD_LAYER } from './model-layers';
import { bagInputShape, bagModelOptions, buildBagModel } from './mil/bag-models';
import { fusionFeatures, fusionOptionsOf } from './fusion/fusion-model';

export const MODEL_KINDS = ['se-cnn', 'attention-cnn', 'small-cnn', 'backbone-head', ...BAG_MODEL_KINDS] as const;
export type ModelKind = (typeof MODEL_KINDS)[number];
export const DEFAULT_MODEL_KIND: ModelKind = 'se-cnn';

export const MIN_IMAGE_SIZE = 16;
export const MAX_IMAGE_SIZE = 512;


/**
 * Options (all numbers, as `ModelSpec.options`):
 * - width (default 1): multiplies the filter counts 16/32/64(/128)
 * - blocks (default 3): convolution blocks, 3 or 4 (a 4th block of 128 filters for larger images)
 * - denseUnits (default 64): units of the hidden dense layer
 * - dropout (default 0.25): dropout rate before the heads, in [0, 1)
 * - batchNorm (default 0): 1 adds batch normalisation after each convolution (for FedBN)
 * - seRatio (se-cnn, attention-cnn; default 8): channel reduction of the SE bottleneck
 * - attentionKernel (attention-cnn; default 7): kernel size of the spatial attention convolution
 * - filters1..filters4 (the CNN kinds; default round(16/32/64/128 x width)): filters of conv block n,
 *   overriding the width (pruned models: pruning/prune-model.ts); only for blocks the model has
 * - seUnits1..seUnits4 (se-cnn, attention-cnn; default max(2, round(filters_n / seRatio))): units
 *   of block n's SE bottleneck; channel pruning keeps the bottleneck and records its width here
 */
const FILTER_OPTIONS = ['filters1', 'filters2', 'filters3', 'filters4'];
const SE_UNIT_OPTIONS = ['seUnits1', 'seUnits2', 'seUnits3', 'seUnits4'];
export const MODEL_OPTIONS: Readonly<Record<ModelKind, readonly string[]>> = {
  'small-cnn': ['width', 'blocks', 'denseUnits', 'dropout', 'batchNorm', ...FILTER_OPTIONS],
  'se-cnn': ['width', 'blocks', 'denseUnits', 'dropout', 'batchNorm', 'seRatio', ...FILTER_OPTIONS, ...SE_UNIT_OPTIONS],
  'attention-cnn': ['width', 'blocks', 'denseUnits', 'dropout', 'batchNorm', 'seRatio', 'attentionKernel', ...FILTER_OPTIONS, ...SE_UNIT_OPTIONS],
  // clinicalWidth / fusionGate / tabularUnits: fusion with a clinical record (fusion/fusion-model.ts).
  'backbone-head': ['denseUnits', 'dropout', 'batchNorm', 'clinicalWidth', 'fusionGate', 'tabularUnits', 'recordDropout', 'imageDropout'],
  // Bag models (mil/bag-models.ts): attentionUnits = units of the attention network (default 128),
  // heads / layers = the transformer's (default 4 / 1), bagTiles = slots per bag (default 32).
  'attention-mil': ['denseUnits', 'dropout', 'attentionUnits', 'bagTiles'],
  'transformer-mil': ['denseUnits', 'dropout', 'heads', 'layers', 'bagTiles'],
};

/** Kinds whose model is heads on a pretrained backbone's tile features (backbone-head and the bag models). */
export function isBackboneKind(kind: string): boolean {
  return kind === 'backbone-head' || isBagModel({ kind });
}
const hasBackbone = isBackboneKind;

/** Tile views per image at most (random training crops whose features a site computes once). */
export const MAX_TILE_VIEWS = 256;

export interface ModelOptions {
  width: number;
  blocks: number;
  denseUnits: number;
  dropout: number;
  batchNorm: boolean;
  seRatio: number;
  attentionKernel: number;
  /** The CNN kinds: filters of each conv block (length `blocks`). */
  filters: readonly number[];
  /** se-cnn, attention-cnn: units of each block's SE bottleneck (length `blocks`). */
  seUnits: readonly number[];
}

function modelOptions(kind: ModelKind, options: Readonly<Record<string, number>> | undefined): ModelOptions {
  const o = options ?? {};
  const known = MODEL_OPTIONS[kind];
  for (const key of Object.keys(o)) {
    if (!known.includes(key)) {
      throw new ValidationError(`model.options.${key}: unknown option for ${kind} (known: ${known.join(', ')})`);
    }
  }
  const integerIn = (name: string, value: number, min: number, max: number) => {
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new ValidationError(`model.options.${name}: must be an integer in [${min}, ${max}], got ${value}`);
    }
    return value;
  };
  const width = o['width'] ?? 1;
  if (!Number.isFinite(width) || width <= 0 || width > 16) {
    throw new ValidationError(`model.options.width: must be a number in (0, 16], got ${width}`);
  }
  const dropout = o['dropout'] ?? 0.25;
  if (!Number.isFinite(dropout) || dropout < 0 || dropout >= 1) {
    throw new ValidationError(`model.options.dropout: must be in [0, 1), got ${dropout}`);
  }
  const batchNorm = integerIn('batchNorm', o['batchNorm'] ?? 0, 0, 1);
  if (kind === 'backbone-head' && batchNorm === 1 && (o['denseUnits'] ?? 0) < 1) {
    throw new ValidationError('model.options.batchNorm: a backbone\'s heads normalize their hidden layer: set denseUnits too');
  }
  const attentionKernel = integerIn('attentionKernel', o['attentionKernel'] ?? 7, 1, 15);
  if (attentionKernel % 2 === 0) {
    throw new ValidationError(`model.options.attentionKernel: must be odd, got ${attentionKernel}`);
  }
  const blocks = integerIn('blocks', o['blocks'] ?? 3, 3, 4);
  const seRatio = integerIn('seRatio', o['seRatio'] ?? 8, 1, 64);
  const perBlock = (names: readonly string[], fallback: (i: number) => number) =>
    names.map((name, i) => {
      const v = o[name];
      if (v !== undefined && i >= blocks) throw new ValidationError(`model.options.${name}: the model has ${blocks} blocks`);
      return v === undefined ? fallback(i) : integerIn(name, v, 1, 4096);
    }).slice(0, blocks);
  const filters = perBlock(FILTER_OPTIONS, (i) => Math.max(1, Math.round([16, 32, 64, 128][i] * width)));
  const seUnits = perBlock(SE_UNIT_OPTIONS, (i) => Math.max(2, Math.round(filters[i] / seRatio)));
  return {
    width,
    blocks,
    // A backbone's heads may read the features directly (0: no hidden layer).
    denseUnits: integerIn('denseUnits', o['denseUnits'] ?? (hasBackbone(kind) ? 0 : 64), hasBackbone(kind) ? 0 : 1, 4096),
    dropout,
    batchNorm: batchNorm === 1,
    seRatio,
    attentionKernel,
    filters,
    seUnits,
  };
}

/** The options of a spec with their defaults (what attachHeads reads: denseUnits, dropout). */
export function modelOptionsOf(spec: ModelSpec): ModelOptions {
  return modelOptions(checkKind(spec), spec.options);
}

function checkKind(spec: ModelSpec): ModelKind {
  const kind = spec.kind ?? DEFAULT_MODEL_KIND;
  if (!(MODEL_KINDS as readonly string[]).includes(kind)) {
    throw new ValidationError(`model.kind: unknown model kind "${kind}" (known: ${MODEL_KINDS.join(', ')})`);
  }
  return kind as ModelKind;
}

/** Checks the class fields of a spec (shared with transfer models). */
export function validateHeads(spec: ModelSpec): void {
  if (!Number.isInteger(spec.numClasses) || spec.numClasses < 2) {
    throw new ValidationError(`model.numClasses: must be an integer >= 2, got ${spec.numClasses}`);
  }
  const parents = spec.subtypeParents ?? [];
  if (parents.length === 1) throw new ValidationError('model.subtypeParents: a second stage needs at least 2 subtypes');
  parents.forEach((p, j) => {
    if (!Number.isInteger(p) || p < 0 || p >= spec.numClasses) {
      throw new ValidationError(`model.subtypeParents[${j}]: must be a stage-1 class index in [0, ${spec.numClasses}), got ${p}`);
    }
  });
  if (parents.length > 0) {
    for (let c = 0; c < spec.numClasses; c++) {
      if (!parents.includes(c)) throw new ValidationError(`model.subtypeParents: stage-1 class ${c} has no subtype`);
    }
  }
}

/** Checks a ModelSpec; throws a ValidationError naming the field. */
export function validateModelSpec(spec: ModelSpec): void {
  const kind = checkKind(spec);
  if (!Number.isInteger(spec.imageSize) || spec.imageSize < MIN_IMAGE_SIZE || spec.imageSize > MAX_IMAGE_SIZE) {
    throw new ValidationError(
      `model.imageSize: must be an integer in [${MIN_IMAGE_SIZE}, ${MAX_IMAGE_SIZE}], got ${spec.imageSize}`,
    );
  }
  validateHeads(spec);
  modelOptions(kind, spec.options);
  if (isBagModel(spec)) bagModelOptions(kind as BagModelKind, spec.options);
  if (fusionOptionsOf(spec) !== null && spec.backbone?.trainFrom !== undefined) {
    throw new ValidationError('model.options.clinicalWidth: fusion with a clinical record reads a frozen backbone\'s tile features (no backbone.trainFrom)');
  }
  if (spec.tiles !== undefined) {
    const { scale, views } = spec.tiles;
    if (!Number.isFinite(scale) || scale < 0.05 || scale > 4) {
      throw new ValidationError(`model.tiles.scale: must be a number in [0.05, 4] (1 = native resolution), got ${scale}`);
    }
    if (!Number.isInteger(views) || views < 0 || views > MAX_TILE_VIEWS) {
      throw new ValidationError(`model.tiles.views: must be an integer in [0, ${MAX_TILE_VIEWS}], got ${views}`);
    }
  }
  if (hasBackbone(kind)) {
    if (spec.backbone === undefined) throw new ValidationError(`model.backbone: kind ${kind} needs a backbone`);
    if (spec.tiles === undefined) throw new ValidationError(`model.tiles: kind ${kind} reads tiles; give {scale, views}`);
    if (kind !== 'backbone-head' && spec.backbone.trainFrom !== undefined) {
      throw new ValidationError(`model.backbone.trainFrom: kind ${kind} reads a frozen backbone's tile features (no trainFrom)`);
    }
  } else if (spec.backbone !== undefined) {
    throw new ValidationError(`model.backbone: only kinds ${MODEL_KINDS.filter(hasBackbone).join(', ')} have a backbone (kind is ${kind})`);
  }
}

/**
 * True when a saved model of the spec holds its trained part only (its input is not a tile: a bag of
 * tile features, or tile features with a clinical record): the consumer computes the tile features
 * with its own copy of the backbone, checked against spec.backbone.sha256.
 */
export function savesTrainedPartOnly(spec: ModelSpec): boolean {
  return isBagModel(spec) || fusionOptionsOf(spec) !== null;
}

/** True when the spec's model is heads on a frozen backbone's tile features (the federated part is the heads only). */
export function isFrozenBackbone(spec: ModelSpec): boolean {
  return spec.backbone !== undefined && spec.backbone.trainFrom === undefined;
}

/**
 * The shape of one input row of the trainable model of `spec` for frozen backbones ([features],
 * or a bag model's [bagTiles, features + 3]), else null (an image or tile).
 */
export function featureInputShape(spec: ModelSpec): number[] | null {
  if (!isFrozenBackbone(spec)) return null;
  const n = spec.backbone?.features;
  if (n === undefined || !Number.isInteger(n) || n < 1) {
    throw new ValidationError('model.backbone.features: unknown; resolve the backbone first (resolveBackbone)');
  }
  if (isBagModel(spec)) return bagInputShape(spec, n);
  // Fusion: each row is the tile's features followed by its patient's encoded clinical record.
  return [n + (fusionOptionsOf(spec)?.clinicalWidth ?? 0)];
}

type SymbolicTensor = tfl.SymbolicTensor;

class Builder {
  private nextSeed: number;
  constructor(seed: number) {
    this.nextSeed = seed;
  }

  init(): ReturnType<typeof tfl.initializers.glorotUniform> {
    return tfl.initializers.glorotUniform({ seed: this.nextSeed++ });
  }

  apply(layer: tfl.layers.Layer, x: SymbolicTensor | SymbolicTensor[]): SymbolicTensor {
    return layer.apply(x) as SymbolicTensor;
  }
}

/** Squeeze-and-excitation: x * sigmoid(W2 relu(W1 mean_hw(x))). */
function squeezeExcite(b: Builder, x: SymbolicTensor, n: number, channels: number, hidden: number): SymbolicTensor {
  let s = b.apply(tfl.layers.globalAveragePooling2d({ name: `se${n}_squeeze` }), x);
  s = b.apply(
    tfl.layers.dense({ name: `se${n}_reduce`, units: hidden, activation: 'relu', kernelInitializer: b.init(), biasInitializer: 'zeros' }),
    s,
  );
  s = b.apply(
    // Bias 0 starts the gate at 0.5 for every channel: the block begins as a plain conv block at half scale.
    tfl.layers.dense({
      name: `se${n}_expand`,
      units: channels,
      activation: 'sigmoid',
      kernelInitializer: b.init(),
      biasInitializer: 'zeros',
    }),
    s,
  );
  s = b.apply(tfl.layers.reshape({ name: `se${n}_reshape`, targetShape: [1, 1, channels] }), s);
  return b.apply(tfl.layers.multiply({ name: `se${n}_scale` }), [x, s]);
}

/** CBAM spatial attention: x * sigmoid(conv_kxk([mean_c(x), max_c(x)])). */
function spatialAttention(b: Builder, x: SymbolicTensor, n: number, kernel: number): SymbolicTensor {
  let a = b.apply(new ChannelPool({ name: `sa${n}_pool` }), x);
  a = b.apply(
    tfl.layers.conv2d({
      name: `sa${n}_conv`,
      filters: 1,
      kernelSize: kernel,
      padding: 'same',
      activation: 'sigmoid',
      kernelInitializer: b.init(),
      biasInitializer: 'zeros',
    }),
    a,
  );
  return b.apply(tfl.layers.multiply({ name: `sa${n}_scale` }), [x, a]);
}

function backbone(b: Builder, kind: ModelKind, o: ModelOptions, input: SymbolicTensor): SymbolicTensor {
  const filters = o.filters;
  // Inputs arrive in [0, 1] (H&E images average ~0.7); centring them on 0 lets ReLU networks without
  // batch normalisation start learning at once (without it a site with a few patients sat at chance
  // for a dozen epochs).
  let x = b.apply(tfl.layers.rescaling({ name: 'center', scale: 2, offset: -1 }), input);
  filters.forEach((f, i) => {
    const n = i + 1;
    x = b.apply(
      tfl.layers.conv2d({
        name: `conv${n}`,
        filters: f,
        kernelSize: 3,
        padding: 'same',
        activation: o.batchNorm ? 'linear' : 'relu',
        useBias: !o.batchNorm,
        kernelInitializer: b.init(),
        biasInitializer: 'zeros',
      }),
      x,
    );
    if (o.batchNorm) {
      x = b.apply(tfl.layers.batchNormalization({ name: `bn${n}`, momentum: 0.9 }), x);
      x = b.apply(tfl.layers.activation({ name: `relu${n}`, activation: 'relu' }), x);
    }
    if (kind !== 'small-cnn') x = squeezeExcite(b, x, n, f, o.seUnits[i]);
    if (kind === 'attention-cnn') x = spatialAttention(b, x, n, o.attentionKernel);
    x = b.apply(tfl.layers.maxPooling2d({ name: `pool${n}`, poolSize: 2 }), x);
  });
  return x;
}

/**
 * The classification heads on a 4-D feature map: global average pooling, `fc1`, dropout, the
 * stage-1 softmax `head` and, for two-stage specs, `subtype_head` concatenated after it.
 */
export function attachHeads(
  features: SymbolicTensor,
  spec: ModelSpec,
  o: { denseUnits: number; dropout: number; headBatchNorm?: boolean },
  seed: number,
): SymbolicTensor {
  const b = new Builder(seed);
  // A feature map is mean-pooled first; a feature vector (a frozen backbone's) is read as it is.
  let x = features.shape.length === 4 ? b.apply(tfl.layers.globalAveragePooling2d({ name: 'gap' }), features) : features;
  if (o.denseUnits > 0 && o.headBatchNorm) {
    // Batch normalization of the hidden layer (a backbone's heads with options.batchNorm 1: FedBN).
    x = b.apply(tfl.layers.dense({ name: 'fc1', units: o.denseUnits, activation: 'linear', useBias: false, kernelInitializer: b.init() }), x);
    x = b.apply(tfl.layers.batchNormalization({ name: 'fc1_bn', momentum: 0.9 }), x);
    x = b.apply(tfl.layers.activation({ name: 'fc1_relu', activation: 'relu' }), x);
  } else if (o.denseUnits > 0) {
    x = b.apply(
      tfl.layers.dense({ name: 'fc1', units: o.denseUnits, activation: 'relu', kernelInitializer: b.init(), biasInitializer: 'zeros' }),
      x,
    );
  }
  if (o.dropout > 0) x = b.apply(tfl.layers.dropout({ name: 'dropout', rate: o.dropout }), x);
  const stage1 = b.apply(
    tfl.layers.dense({ name: HEAD_LAYER, units: spec.numClasses, activation: 'softmax', kernelInitializer: b.init(), biasInitializer: 'zeros' }),
    x,
  );
  if (!isTwoStage(spec)) return stage1;
  const subtype = b.apply(
    tfl.layers.dense({
      name: SUBTYPE_HEAD_LAYER,
      units: (spec.subtypeParents as readonly number[]).length,
      activation: 'softmax',
      kernelInitializer: b.init(),
      biasInitializer: 'zeros',
    }),
    x,
  );
  return b.apply(tfl.layers.concatenate({ name: OUTPUT_LAYER, axis: -1 }), [stage1, subtype]);
}

/**
 * Builds a fresh model for `spec` (kind defaults to 'se-cnn'). Models built from the same spec
 * and seed have identical weight names and values. The caller owns the model (`model.dispose()`).
 */
export function buildModel(spec: ModelSpec, seed = 1): tfl.LayersModel {
  validateModelSpec(spec);
  if (!Number.isInteger(seed)) throw new ValidationError(`seed: must be an integer, got ${seed}`);
  assertBackendReady();
  const kind = checkKind(spec);
  const o = modelOptions(kind, spec.options);
  if (isBagModel(spec)) {
    if (featureInputShape(spec) === null) throw new ValidationError(`model.backbone: kind ${kind} needs a frozen backbone`);
    return buildBagModel(spec, kind as BagModelKind, spec.backbone?.features as number, seed);
  }
  if (kind === 'backbone-head') {
    const shape = featureInputShape(spec);
    if (shape === null) {
      throw new ValidationError('model.backbone.trainFrom: a fine-tuned backbone model needs the backbone loaded: use buildModelAsync');
    }
    const fusion = fusionOptionsOf(spec);
    if (fusion) {
      const { input, fused } = fusionFeatures(spec.backbone?.features as number, fusion, seed);
      return tfl.model({ name: 'fusion_head', inputs: input, outputs: attachHeads(fused, spec, { ...o, headBatchNorm: o.batchNorm }, seed + 1000) });
    }
    const features = tfl.input({ name: 'features', shape });
    return tfl.model({ name: 'backbone_head', inputs: features, outputs: attachHeads(features, spec, { ...o, headBatchNorm: o.batchNorm }, seed + 1000) });
  }
  const input = tfl.input({ name: 'image', shape: [spec.imageSize, spec.imageSize, 3] });
  const b = new Builder(seed);
  const features = backbone(b, kind, o, input);
  // The heads draw their seeds after the backbone's, so a spec change in the heads keeps the backbone's initial weights.
  const output = attachHeads(features, spec, o, seed + 1000);
  return tfl.model({ name: kind.replace('-', '_'), inputs: input, outputs: output });
}

export interface ModelDescription {
  readonly parameters: number;
  readonly trainableParameters: number;
  /** Multiply-adds of one forward pass of one image (convolutions and dense layers); FLOPs ~ 2x. */
  readonly multiplyAdds: number;
  readonly layers: readonly {
    readonly name: string;
    readonly type: string;
    readonly outputShape: string;
    readonly parameters: number;
    readonly multiplyAdds: number;
  }[];
}

function layerMultiplyAdds(layer: tfl.layers.Layer): number {
  const cls = layer.getClassName();
  const out = layer.outputShape as (number | null)[];
  if (cls === 'Conv2D') {
    const kernel = (layer as unknown as { kernel: tfl.LayerVariable }).kernel.shape as number[]; // [kh, kw, cin, cout]
    const pixels = (out[1] ?? 0) * (out[2] ?? 0);
    return pixels * kernel[0] * kernel[1] * kernel[2] * kernel[3];
  }
  if (cls === 'Dense') {
    const kernel = (layer as unknown as { kernel: tfl.LayerVariable }).kernel.shape as number[];
    // A dense layer on tiles ([b, T, F]) runs once per tile.
    const rows = out.slice(1, -1).reduce<number>((n, d) => n * (d ?? 1), 1);
    return rows * kernel[0] * kernel[1];
  }
  // The bag models' attention layers count their own (tiles x width of their first input).
  if (typeof (layer as { multiplyAdds?: unknown }).multiplyAdds === 'function') {
    const input = (layer.input as tfl.SymbolicTensor[])[0].shape;
    return (layer as unknown as { multiplyAdds(t: number, d: number): number }).multiplyAdds(input[1] ?? 0, input[2] ?? 0);
  }
  return 0;
}

/** Parameter counts, multiply-adds and the layer list, for logs, reports and the API. */
export function describeModel(model: tfl.LayersModel): ModelDescription {
  const layers = model.layers.map((l) => ({
    name: l.name,
    type: l.getClassName(),
    outputShape: JSON.stringify(l.outputShape),
    parameters: l.countParams(),
    multiplyAdds: layerMultiplyAdds(l),
  }));
  const count = (vars: readonly tfl.LayerVariable[]) => vars.reduce((n, v) => n + v.read().size, 0);
  return {
    parameters: count(model.weights),
    trainableParameters: count(model.trainableWeights),
    multiplyAdds: layers.reduce((n, l) => n + l.multiplyAdds, 0),
    layers,
  };
}
