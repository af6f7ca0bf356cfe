/**
 * The penultimate features of a HistoFed classifier — the input of its stage-1 `head` layer (which
 * `subtype_head` reads too), taken before the `dropout` layer when there is one (dropout is the
 * identity at inference; in training its random mask would inflate the batch covariance against
 * a reference computed at inference) — and a site's feature moments over its own rows.
 *
 * Works for every built-in kind: the image CNNs (single- and two-stage: the features after `fc1`),
 * heads on a frozen backbone's cached tile features (`backbone-head`: after `fc1`, or the backbone
 * features themselves with denseUnits 0), fine-tuning models, and saved tile classifiers.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages } from '@histofed/fl-core';
import { HistoFedError, ValidationError } from '@histofed/fl-core';
import { assertBackendReady } from '../backend';
import { checkImages, dataRowShape, imageBatch, modelGeometry } from '../batches';
import { HEAD_LAYER } from '../model-layers';
import { FeatureMomentsAccumulator, MAX_FEATURE_DIM, type FeatureMoments } from './feature-moments';

interface FeatureModels {
  /** Image (row) -> penultimate features. */
  readonly features: tfl.LayersModel;
  /** Image (row) -> [the model's output, penultimate features]: one forward pass for a training step. */
  readonly training: tfl.LayersModel;
  /** The features are the model's input itself (heads reading backbone features directly). */
  readonly isInput: boolean;
  readonly dim: number;
}

const cache = new WeakMap<tfl.LayersModel, FeatureModels>();

function featureTensorFor(head: tfl.layers.Layer, nodeIndex: number): tfl.SymbolicTensor {
  let t = head.inboundNodes[nodeIndex].inputTensors[0];
  if (t.sourceLayer.getClassName() === 'Dropout') t = t.sourceLayer.inboundNodes[t.nodeIndex].inputTensors[0];
  return t;
}

/**
 * Models that share `model`'s layers and weights (nothing is copied) and output its penultimate
 * features (see the module comment). Built once per model and cached; never dispose them (that
 * would release the shared layers' weights): they go with `model`.
 */
export function penultimateModels(model: tfl.LayersModel): FeatureModels {
  const hit = cache.get(model);
  if (hit !== undefined) return hit;
  let head: tfl.layers.Layer;
  try {
    head = model.getLayer(HEAD_LAYER);
  } catch {
    throw new ValidationError(`model: no layer '${HEAD_LAYER}'; penultimate features need a HistoFed classifier (models.ts)`);
  }
  // A layer re-applied in another graph (a saved tile classifier) has several inbound nodes: take the one of this model.
  let built: FeatureModels | null = null;
  for (let k = head.inboundNodes.length - 1; k >= 0 && built === null; k--) {
    const f = featureTensorFor(head, k);
    if (f.shape.length !== 2 || f.shape[1] === null) continue;
    try {
      built = {
        features: tfl.model({ name: `${model.name}_penultimate`, inputs: model.inputs, outputs: f }),
        training: tfl.model({ name: `${model.name}_with_penultimate`, inputs: model.inputs, outputs: [model.outputs[0], f] }),
        isInput: model.inputs.includes(f),
        dim: f.shape[1],
      };
    } catch {
      // not this model's node (graph disconnected)
    }
  }
  if (built === null) throw new ValidationError(`model: the input of layer '${HEAD_LAYER}' is not a [batch, features] tensor of this model`);
  if (built.dim > MAX_FEATURE_DIM) {
    throw new ValidationError(`model: the penultimate features have ${built.dim} values, more than ${MAX_FEATURE_DIM}`);
  }
  cache.set(model, built);
  return built;
}

/** Width of `model`'s penultimate features. */
export function penultimateDim(model: tfl.LayersModel): number {
  return penultimateModels(model).dim;
}

/** The rows a site computes moments over (images, or feature rows with `sampleShape`). */
export type FeatureRows = Pick<LabeledImages, 'images' | 'count' | 'imageSize' | 'sampleShape'>;

export interface FeatureMomentsOptions {
  /** Rows per forward pass (default 64). */
  readonly batchSize?: number;
  /** Stops between mini-batches; featureMoments then rejects with code 'ABORTED'. */
  readonly signal?: AbortSignal;
}

/**
 * The moments (count, E[x], E[x x^T], float64) of `model`'s penultimate features (inference mode)
 * over every row of `data` — one per image, or per tile row for tiled data. Only these leave a
 * site; no per-row vector is kept. Yields to the event loop between mini-batches; the tensors it
 * creates are disposed (tf.memory().numTensors is unchanged).
 */
export async function featureMoments(model: tfl.LayersModel, data: FeatureRows, options: FeatureMomentsOptions = {}): Promise<FeatureMoments> {
  assertBackendReady();
  const batchSize = options.batchSize ?? 64;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ValidationError(`batchSize: must be an integer >= 1, got ${batchSize}`);
  const geo = modelGeometry(model);
  const shape = dataRowShape(data);
  if (geo.inputShape.join() !== shape.join()) {
    throw new ValidationError(`data: the model takes rows of ${geo.inputShape.join('x')}, got ${shape.join('x')}`);
  }
  checkImages(data.images, data.count, shape, 'data');
  if (data.count === 0) throw new ValidationError('data.count: there are no rows to compute feature moments over');
  const fm = penultimateModels(model);
  const acc = new FeatureMomentsAccumulator(fm.dim);
  for (let start = 0; start < data.count; start += batchSize) {
    if (options.signal?.aborted) throw new HistoFedError('ABORTED', `feature moments aborted at row ${start}`);
    const end = Math.min(data.count, start + batchSize);
    if (fm.isInput) {
      acc.add(data.images.subarray(start * fm.dim, end * fm.dim), end - start);
    } else {
      const feats = tf.tidy(() => fm.features.predict(imageBatch(data.images, shape, start, end), { batchSize: end - start }) as tf.Tensor);
      try {
        acc.add(feats.dataSync(), end - start);
      } finally {
        feats.dispose();
      }
    }
    if (end < data.count) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return acc.moments();
}
