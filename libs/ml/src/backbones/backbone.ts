/**
 * Backbones: a pretrained network cut at a layer, whose mean-pooled output is a tile's feature
 * vector (frozen mode), or whose last blocks train with the heads (fine-tuning, `trainFrom`).
 *
 * `resolveBackbone` checks a spec against the local source (content hash, cut and trainFrom layers)
 * and fills in `sha256` and `features`; `tileFeatureModel` builds the frozen part as a tfjs model
 * (tile in [0, 1] -> input scaling -> backbone layers -> [mean pool]) and `tileFeatureExtractor`
 * wraps it for libs/data's tile sets. Loaded backbones are kept per process (one per source and
 * tile size).
 */
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { BackboneSpec } from '@histofed/fl-core';
import { BACKBONE_NAMES, HistoFedError, ValidationError } from '@histofed/fl-core';
import { assertBackendReady } from '../backend';
import { backboneSource, type BackboneSource } from './backbone-source';
import { inputLayerName, layerInputName, rewire } from './rewire';

/** Name of the mean-pooling layer that ends a frozen feature model (and the saved model's feature part). */
export const FEATURE_POOL_LAYER = 'feature_pool';
/** Name of the input-scaling layer in front of a 'signed' backbone. */
export const BACKBONE_SCALING_LAYER = 'backbone_scaling';
/** Name of the tile input of feature models and saved tile classifiers. */
export const TILE_INPUT = 'tile';

/** A site refuses a task whose backbone differs from its own copy. */
export class BackboneMismatchError extends HistoFedError {
  constructor(message: string) {
    super('BACKBONE_MISMATCH', message);
  }
}

/** Where a process finds backbones that are not built in ('layers-model': a directory). */
export interface BackboneLocation {
  readonly dir?: string;
}

interface TopologyLayer {
  class_name: string;
  name?: string;
  config: Record<string, unknown>;
}

type ModelConfig = { class_name?: string; config: Record<string, unknown> & { layers?: TopologyLayer[] } };

/** The model config of a model.json: Keras/converter files wrap it in `model_config`, tfjs's own saves do not. */
function modelConfigOf(json: tf.io.ModelJSON): ModelConfig {
  const topology = json.modelTopology as { model_config?: ModelConfig } & Partial<ModelConfig>;
  const config = topology?.model_config ?? (topology?.config !== undefined ? (topology as ModelConfig) : undefined);
  if (config === undefined) throw new ValidationError('backbone: model.json has no model configuration');
  return config;
}

function topologyLayers(json: tf.io.ModelJSON): TopologyLayer[] {
  const layers = modelConfigOf(json).config.layers;
  if (!Array.isArray(layers) || layers.length === 0) throw new ValidationError('backbone: model.json has no layers');
  return layers;
}

const layerNameOf = (l: TopologyLayer): string => (l.name ?? (l.config['name'] as string | undefined) ?? '') as string;

/** Names of the backbone's layers, in the order its model.json lists them (topological for Keras models). */
export function backboneLayerNames(source: BackboneSource): string[] {
  return topologyLayers(source.json).map(layerNameOf);
}

/**
 * The model JSON with a size x size x 3 input and, for a functional model, only the layers up to
 * `until` (the cut), which becomes its output: the layers after the cut are never built (a
 * backbone's own classifier may not even accept another input size).
 */
function withInputSize(json: tf.io.ModelJSON, size: number, until: string): tf.io.ModelJSON {
  const copy = JSON.parse(JSON.stringify(json)) as tf.io.ModelJSON;
  const layers = topologyLayers(copy);
  const config = modelConfigOf(copy);
  const end = layers.findIndex((l) => layerNameOf(l) === until);
  if (end < 0) throw new ValidationError(`backbone: no layer "${until}"`);
  if (config.class_name === 'Model' || config.class_name === 'Functional') {
    config.config['layers'] = layers.slice(0, end + 1);
    config.config['output_layers'] = [[until, 0, 0]];
  } else {
    config.config['layers'] = layers.slice(0, end + 1);
  }
  const inputs = layers.filter((l) => l.class_name === 'InputLayer');
  const targets = inputs.length > 0 ? inputs : [layers[0]];
  for (const l of targets) {
    const shape = l.config['batch_input_shape'] as (number | null)[] | undefined;
    if (!Array.isArray(shape) || shape.length !== 4 || shape[3] !== 3) {
      throw new ValidationError(`backbone: the input must be an RGB image [null, h, w, 3], got ${JSON.stringify(shape)}`);
    }
    l.config['batch_input_shape'] = [null, size, size, 3];
  }
  return copy;
}

const loaded = new Map<string, Promise<tfl.LayersModel>>();

/**
 * The source's layers up to `until` with a size x size x 3 input (kept for the process; do not
 * dispose it).
 */
export function backboneModel(source: BackboneSource, size: number, until: string): Promise<tfl.LayersModel> {
  assertBackendReady();
  const key = `${source.sha256}/${size}/${until}/${tf.getBackend()}`;
  let p = loaded.get(key);
  if (!p) {
    p = (async () => {
      const json = withInputSize(source.json, size, until);
      const artifacts = await tf.io.getModelArtifactsForJSON(json, async () => [source.weightSpecs, source.weightData]);
      try {
        return await tfl.loadLayersModel({ load: async () => artifacts }, { strict: false });
      } catch (e) {
        throw new ValidationError(`backbone ${source.name} (${source.origin}): tfjs cannot load it: ${(e as Error).message}`);
      }
    })();
    loaded.set(key, p);
    p.catch(() => loaded.delete(key));
  }
  return p;
}

function channelsOf(layer: tfl.layers.Layer, what: string): number {
  const shape = layer.outputShape as (number | null)[];
  if (!Array.isArray(shape) || Array.isArray(shape[0]) || shape.length !== 4 || shape[3] === null) {
    throw new ValidationError(`${what}: layer "${layer.name}" must output a feature map [null, h, w, c], got ${JSON.stringify(shape)}`);
  }
  return shape[3] as number;
}

export interface ResolvedBackbone {
  /** The spec with sha256 and features filled in. */
  readonly spec: BackboneSpec & { readonly sha256: string; readonly features: number };
  readonly source: BackboneSource;
}

/**
 * Checks `spec` against the local backbone: the name is known, the source's hash equals
 * `spec.sha256` when given (else BackboneMismatchError), the cut and trainFrom layers exist with
 * trainFrom before the cut. Returns the spec completed with sha256 and features.
 */
export async function resolveBackbone(spec: BackboneSpec, where: BackboneLocation = {}, tileSize = 224): Promise<ResolvedBackbone> {
  if (!(BACKBONE_NAMES as readonly string[]).includes(spec.name)) {
    throw new ValidationError(`model.backbone.name: unknown backbone "${spec.name}" (known: ${BACKBONE_NAMES.join(', ')})`);
  }
  if (spec.input !== 'unit' && spec.input !== 'signed') {
    throw new ValidationError(`model.backbone.input: must be 'unit' ([0, 1]) or 'signed' ([-1, 1]), got ${JSON.stringify(spec.input)}`);
  }
  const source = await backboneSource(spec.name, where.dir);
  if (spec.sha256 !== undefined && spec.sha256 !== source.sha256) {
    throw new BackboneMismatchError(
      `backbone ${spec.name}: this site's copy (${source.origin}) has SHA-256 ${source.sha256.slice(0, 16)}…, the run's is ${spec.sha256.slice(0, 16)}…; install the same backbone files`,
    );
  }
  if (!backboneLayerNames(source).includes(spec.cut)) throw new ValidationError(`model.backbone.cut: backbone ${spec.name} has no layer "${spec.cut}"`);
  const model = await backboneModel(source, tileSize, spec.cut);
  const names = model.layers.map((l) => l.name);
  const cutIndex = names.indexOf(spec.cut);
  if (cutIndex < 0) throw new ValidationError(`model.backbone.cut: backbone ${spec.name} has no layer "${spec.cut}"`);
  const features = channelsOf(model.layers[cutIndex], 'model.backbone.cut');
  if (spec.features !== undefined && spec.features !== features) {
    throw new ValidationError(`model.backbone.features: layer "${spec.cut}" has ${features} channels, the spec says ${spec.features}`);
  }
  if (spec.trainFrom !== undefined) {
    const from = names.indexOf(spec.trainFrom);
    if (from < 0) throw new ValidationError(`model.backbone.trainFrom: backbone ${spec.name} has no layer "${spec.trainFrom}"`);
    if (from > cutIndex) throw new ValidationError(`model.backbone.trainFrom: layer "${spec.trainFrom}" comes after the cut "${spec.cut}"`);
    layerInputName(model, spec.trainFrom);
  }
  return { spec: { ...spec, sha256: source.sha256, features }, source };
}

/**
 * The frozen part of a backbone model as a tfjs model: tile [size, size, 3] in [0, 1] -> scaling
 * ('signed': x * 2 - 1) -> backbone layers up to the cut, mean-pooled (frozen mode), or up to the
 * layer before `trainFrom` (fine-tuning: the feature map the trainable blocks read). Shares the
 * backbone's weights (dispose neither while the other is used).
 */
export function tileFeatureModel(backbone: tfl.LayersModel, spec: BackboneSpec): tfl.LayersModel {
  const shape = backbone.inputs[0].shape;
  const input = tfl.input({ name: TILE_INPUT, shape: shape.slice(1) as number[] });
  const scaled =
    spec.input === 'signed'
      ? (tfl.layers.rescaling({ name: BACKBONE_SCALING_LAYER, scale: 2, offset: -1 }).apply(input) as tfl.SymbolicTensor)
      : input;
  const boundary = spec.trainFrom === undefined ? spec.cut : layerInputName(backbone, spec.trainFrom);
  let out = rewire(backbone, new Map([[inputLayerName(backbone), scaled]]), boundary);
  if (spec.trainFrom === undefined) out = tfl.layers.globalAveragePooling2d({ name: FEATURE_POOL_LAYER }).apply(out) as tfl.SymbolicTensor;
  return tfl.model({ name: 'tile_features', inputs: input, outputs: out });
}

/**
 * SHA-256 over `descriptor` (what the weights do not say: cut, input scaling, tile size) and the
 * model's weight names and values — the same whether the model was built from the backbone's
 * package or split off a saved model.
 */
export function modelContentHash(model: tfl.LayersModel, descriptor: unknown): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(descriptor));
  for (const w of model.weights) {
    const v = w.read().dataSync() as Float32Array;
    h.update(w.originalName);
    h.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  }
  return h.digest('hex');
}

/** Shape of one output row of a feature model. */
export function featureRowShape(model: tfl.LayersModel): number[] {
  const s = model.outputs[0].shape.slice(1);
  if (s.some((d) => d === null)) throw new ValidationError(`feature model ${model.name}: output shape ${JSON.stringify(s)} is not fixed`);
  return s as number[];
}

/** Runs a feature model over tiles in mini-batches (yielding to the event loop between them). */
export async function extractTileRows(model: tfl.LayersModel, tiles: Float32Array, count: number, size: number, batchSize = 16): Promise<Float32Array> {
  const per = size * size * 3;
  if (tiles.length !== count * per) throw new ValidationError(`tiles: ${count} tiles of ${size} px need ${count * per} values, got ${tiles.length}`);
  const rowLength = featureRowShape(model).reduce((a, b) => a * b, 1);
  const out = new Float32Array(count * rowLength);
  for (let start = 0; start < count; start += batchSize) {
    const end = Math.min(count, start + batchSize);
    const y = tf.tidy(() => model.predict(tf.tensor4d(tiles.subarray(start * per, end * per), [end - start, size, size, 3])) as tf.Tensor);
    try {
      out.set((await y.data()) as Float32Array, start * rowLength);
    } finally {
      y.dispose();
    }
    if (end < count) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return out;
}

/** A frozen backbone part as libs/data's TileRowExtractor (structurally): id, row shape, extract. */
export interface TileFeatureExtractor {
  readonly id: string;
  readonly rowShape: readonly number[];
  readonly model: tfl.LayersModel;
  extract(tiles: Float32Array, count: number, size: number): Promise<Float32Array>;
}

/** Wraps a feature model (tileFeatureModel, or the feature part of a saved model). */
export function featureExtractorOf(model: tfl.LayersModel, spec: BackboneSpec): TileFeatureExtractor {
  const size = model.inputs[0].shape[1] as number;
  const id = modelContentHash(model, { cut: spec.cut, input: spec.input, trainFrom: spec.trainFrom ?? null, size });
  return {
    id,
    rowShape: featureRowShape(model),
    model,
    extract: async (tiles, count, tileSize) => {
      if (tileSize !== size) throw new ValidationError(`feature extractor: built for ${size} px tiles, got ${tileSize} px`);
      return extractTileRows(model, tiles, count, size);
    },
  };
}

const extractors = new Map<string, Promise<TileFeatureExtractor>>();

/** The frozen part of the spec's backbone for tiles of `size` px, checked against the local copy (kept per process). */
export function tileFeatureExtractor(spec: BackboneSpec, size: number, where: BackboneLocation = {}): Promise<TileFeatureExtractor> {
  const key = JSON.stringify([spec.name, spec.sha256 ?? null, spec.cut, spec.input, spec.trainFrom ?? null, size, where.dir ?? null, tf.getBackend()]);
  let p = extractors.get(key);
  if (!p) {
    p = (async () => {
      const { source } = await resolveBackbone(spec, where, size);
      return featureExtractorOf(tileFeatureModel(await backboneModel(source, size, spec.cut), spec), spec);
    })();
    extractors.set(key, p);
    p.catch(() => extractors.delete(key));
  }
  return p;
}
