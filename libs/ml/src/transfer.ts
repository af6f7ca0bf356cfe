/**
 * Transfer learning: start from the convolutional base of any tfjs Layers model on disk (a
 * HistoFed saved model, or a model.json + weight shards from the tfjs converter), add fresh
 * HistoFed heads (models.ts `attachHeads`, so a two-stage spec gets both heads), train the heads
 * with the base frozen, then unfreeze the last N layers of the base and fine-tune.
 *
 * The base is cut after its last layer with a 4-D output (a feature map), before any global
 * pooling, flattening or dense layer. Its layers keep their names, so the weight names of a
 * transfer model are stable across processes (all sites start from the same files).
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { assertBackendReady } from './backend';
import { layersModelDirSource } from './backbones/backbone-source';
import { attachHeads, validateHeads } from './models';
import { MODEL_JSON_FILE } from './saved-model';

/** Loads a tfjs Layers model directory (model.json and the weight files its manifest lists). */
export async function loadLayersModelDir(dir: string): Promise<tfl.LayersModel> {
  assertBackendReady();
  const source = await layersModelDirSource(dir, '--init-from');
  try {
    const artifacts = await tf.io.getModelArtifactsForJSON(source.json, async () => [source.weightSpecs, source.weightData]);
    return await tfl.loadLayersModel({ load: async () => artifacts });
  } catch (e) {
    throw new ValidationError(`${path.join(dir, MODEL_JSON_FILE)}: tfjs cannot load the model: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export interface TransferModel {
  readonly model: tfl.LayersModel;
  /** Names of the base layers kept (in order); the rest of `model` is the new heads. */
  readonly baseLayers: readonly string[];
}

/**
 * A model for `spec` on the convolutional base of `base` (which it shares layers and weights with:
 * dispose only the returned model or the base, not both). The base's input must be
 * [null, spec.imageSize, spec.imageSize, 3]. The base starts frozen (`setTrainableBaseLayers(t, 0)`).
 */
export function buildTransferModel(
  base: tfl.LayersModel,
  spec: ModelSpec,
  options: { denseUnits?: number; dropout?: number; seed?: number } = {},
): TransferModel {
  validateHeads(spec);
  const input = base.inputs.length === 1 ? base.inputs[0].shape : null;
  if (input === null || input.length !== 4 || input[3] !== 3) {
    throw new ValidationError(`--init-from: the base model must take one RGB image input [null, h, w, 3], got ${JSON.stringify(base.inputs.map((i) => i.shape))}`);
  }
  if (input[1] !== spec.imageSize || input[2] !== spec.imageSize) {
    throw new ValidationError(
      `--init-from: the base model takes ${input[1]}x${input[2]} images, the spec asks for ${spec.imageSize}x${spec.imageSize} (use --image-size ${input[1]})`,
    );
  }
  let cut = -1;
  base.layers.forEach((l, i) => {
    const shape = l.outputShape as (number | null)[];
    if (!Array.isArray(shape[0]) && shape.length === 4 && l.getClassName() !== 'InputLayer') cut = i;
  });
  if (cut < 0) throw new ValidationError('--init-from: the base model has no layer with a 4-D (feature map) output to build on');
  // Layers after the cut that feed it (a branch) would be left out of the graph; the cut must end the backbone.
  const baseLayers = base.layers.slice(0, cut + 1).filter((l) => l.getClassName() !== 'InputLayer');
  const features = base.layers[cut].output as tfl.SymbolicTensor;
  const heads = attachHeads(features, spec, { denseUnits: options.denseUnits ?? 64, dropout: options.dropout ?? 0.25 }, options.seed ?? 1001);
  const model = tfl.model({ name: 'transfer', inputs: base.inputs, outputs: heads });
  const names = new Set<string>();
  for (const l of model.layers) {
    if (names.has(l.name)) throw new ValidationError(`--init-from: layer name "${l.name}" occurs in the base and in the new heads`);
    names.add(l.name);
  }
  const t = { model, baseLayers: baseLayers.map((l) => l.name) };
  setTrainableBaseLayers(t, 0);
  return t;
}

/**
 * Freezes the base except its last `n` layers that hold weights (0: heads only; Infinity: the
 * whole model trains). Returns the names of the base layers left trainable.
 */
export function setTrainableBaseLayers(t: TransferModel, n: number): string[] {
  if (!(n >= 0)) throw new ValidationError(`unfreeze: must be a number of layers >= 0, got ${n}`);
  const withWeights = t.baseLayers.map((name) => t.model.getLayer(name)).filter((l) => l.weights.length > 0);
  const open = new Set(withWeights.slice(Math.max(0, withWeights.length - n)).map((l) => l.name));
  for (const name of t.baseLayers) t.model.getLayer(name).trainable = open.has(name);
  return [...open];
}
