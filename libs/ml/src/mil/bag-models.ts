/**
 * The bag models: heads on a frozen backbone's tile features that learn which tiles decide,
 * instead of averaging the tiles' predictions. A model reads one bag row per image
 * ([bagTiles, F + 3], fl-core tile-bags.ts) and outputs the image's row as every HistoFed model
 * does (stage-1 softmax, then the subtype softmax: attachHeads), so training, federation, secure
 * aggregation, evaluation, ensembles and saved models treat it like any other LayersModel.
 *
 * - `attention-mil`: optional ReLU tile embedding `tile_embed` (options.denseUnits, default 0 =
 *   the features as they are) -> gated attention pooling `attention` (options.attentionUnits,
 *   default 128) -> dropout -> heads.
 * - `transformer-mil`: linear tile embedding `tile_embed` to D = options.denseUnits (default 64)
 *   -> TileTransformer `transformer` (class token, options.layers blocks of options.heads-head
 *   self-attention, positions from the tile grid) -> dropout -> heads.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { BagModelKind, ModelSpec } from '@histofed/fl-core';
import { BAG_SLOT_EXTRA, MAX_BAG_TILES, ValidationError, bagTilesOf } from '@histofed/fl-core';
import { assertBackendReady } from '../backend';
import { rowLengthOf } from '../batches';
import { MODEL_OPTIONS, attachHeads } from '../models';
import { GatedAttentionPool, TileBagSlice } from './bag-layers';
import { TileTransformer } from './tile-transformer';

export interface BagModelOptions {
  /** attention-mil: units of the ReLU tile embedding (0: none); transformer-mil: the token width D. */
  readonly denseUnits: number;
  readonly dropout: number;
  readonly attentionUnits: number;
  readonly heads: number;
  readonly layers: number;
  readonly bagTiles: number;
}

function integerIn(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ValidationError(`model.options.${name}: must be an integer in [${min}, ${max}], got ${value}`);
  }
  return value;
}

/** The options of a bag kind with their defaults; throws a ValidationError naming the option. */
export function bagModelOptions(kind: BagModelKind, options: Readonly<Record<string, number>> | undefined): BagModelOptions {
  const o = options ?? {};
  const known = MODEL_OPTIONS[kind];
  for (const key of Object.keys(o)) {
    if (!known.includes(key)) throw new ValidationError(`model.options.${key}: unknown option for ${kind} (known: ${known.join(', ')})`);
  }
  const dropout = o['dropout'] ?? 0.25;
  if (!Number.isFinite(dropout) || dropout < 0 || dropout >= 1) throw new ValidationError(`model.options.dropout: must be in [0, 1), got ${dropout}`);
  const transformer = kind === 'transformer-mil';
  const out: BagModelOptions = {
    denseUnits: integerIn('denseUnits', o['denseUnits'] ?? (transformer ? 64 : 0), transformer ? 4 : 0, 4096),
    dropout,
    attentionUnits: integerIn('attentionUnits', o['attentionUnits'] ?? 128, 1, 4096),
    heads: integerIn('heads', o['heads'] ?? 4, 1, 16),
    layers: integerIn('layers', o['layers'] ?? 1, 1, 2),
    bagTiles: integerIn('bagTiles', bagTilesOf({ options: o }), 1, MAX_BAG_TILES),
  };
  if (transformer && out.denseUnits % out.heads !== 0) {
    throw new ValidationError(`model.options.denseUnits: the token width (${out.denseUnits}) must be a multiple of options.heads (${out.heads})`);
  }
  return out;
}

/** The input row of a bag model of `spec` over `features` values per tile: [bagTiles, features + 3]. */
export function bagInputShape(spec: Pick<ModelSpec, 'options'>, features: number): number[] {
  return [bagTilesOf(spec), features + BAG_SLOT_EXTRA];
}

/** Builds a fresh bag model (spec validated by the caller: models.ts buildModel). */
export function buildBagModel(spec: ModelSpec, kind: BagModelKind, features: number, seed: number): tfl.LayersModel {
  assertBackendReady();
  const o = bagModelOptions(kind, spec.options);
  const input = tfl.input({ name: 'bags', shape: bagInputShape(spec, features) });
  const part = (p: 'features' | 'mask' | 'positions') => new TileBagSlice({ name: `bag_${p}`, part: p, features }).apply(input) as tfl.SymbolicTensor;
  const x = part('features');
  const mask = part('mask');
  let z: tfl.SymbolicTensor;
  if (kind === 'attention-mil') {
    let h = x;
    if (o.denseUnits > 0) {
      const init = tfl.initializers.glorotUniform({ seed: seed + 1 });
      h = tfl.layers.dense({ name: 'tile_embed', units: o.denseUnits, activation: 'relu', kernelInitializer: init, biasInitializer: 'zeros' }).apply(x) as tfl.SymbolicTensor;
    }
    z = new GatedAttentionPool({ name: 'attention', units: o.attentionUnits, seed: seed + 10 }).apply([h, mask]) as tfl.SymbolicTensor;
  } else {
    const init = tfl.initializers.glorotUniform({ seed: seed + 1 });
    const h = tfl.layers.dense({ name: 'tile_embed', units: o.denseUnits, kernelInitializer: init, biasInitializer: 'zeros' }).apply(x) as tfl.SymbolicTensor;
    z = new TileTransformer({ name: 'transformer', heads: o.heads, layers: o.layers, ffUnits: 2 * o.denseUnits, dropout: 0, seed: seed + 10 }).apply([
      h,
      mask,
      part('positions'),
    ]) as tfl.SymbolicTensor;
  }
  const output = attachHeads(z, spec, { denseUnits: 0, dropout: o.dropout }, seed + 1000);
  return tfl.model({ name: kind.replace('-', '_'), inputs: input, outputs: output });
}

/** The layer of a bag model that weighs its tiles, or null for other models. */
function attentionLayer(model: tfl.LayersModel): GatedAttentionPool | TileTransformer | null {
  return (model.layers.find((l) => l instanceof GatedAttentionPool || l instanceof TileTransformer) as GatedAttentionPool | TileTransformer | undefined) ?? null;
}

/** True when `model` is a bag model (it weighs tiles: tileAttention works). */
export function isBagLayersModel(model: tfl.LayersModel): boolean {
  return attentionLayer(model) !== null;
}

/**
 * Each tile's weight in its bag's prediction: [count, bagTiles] row-major, summing to 1 over a
 * bag's tiles, 0 on padding (gated attention: the pooling weights; transformer: the class token's
 * attention in the last block, averaged over heads). `bags` holds `count` bag rows.
 */
export function tileAttention(model: tfl.LayersModel, bags: Float32Array, count: number, batchSize = 64): Float32Array {
  const layer = attentionLayer(model);
  if (layer === null) throw new ValidationError('tileAttention: the model does not weigh tiles (kinds attention-mil and transformer-mil do)');
  const shape = model.inputs[0].shape.slice(1) as number[];
  const rowLength = rowLengthOf(shape);
  if (!Number.isInteger(count) || count < 0 || bags.length !== count * rowLength) {
    throw new ValidationError(`tileAttention: ${count} bags of [${shape.join(', ')}] need ${count * rowLength} values, got ${bags.length}`);
  }
  // A view of the model up to the attention layer's inputs (shares the model's weights; nothing to dispose).
  const inner = tfl.model({ inputs: model.inputs, outputs: layer.input as tfl.SymbolicTensor[] });
  const tiles = shape[0];
  const out = new Float32Array(count * tiles);
  for (let start = 0; start < count; start += batchSize) {
    const n = Math.min(batchSize, count - start);
    const a = tf.tidy(() => {
      const x = tf.tensor(bags.subarray(start * rowLength, (start + n) * rowLength), [n, ...shape]);
      return layer.tileAttention(inner.predict(x) as [tf.Tensor, tf.Tensor, tf.Tensor]);
    });
    try {
      out.set(a.dataSync() as Float32Array, start * tiles);
    } finally {
      a.dispose();
    }
  }
  return out;
}
