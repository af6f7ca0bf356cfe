/**
 * Fine-tuning mode: the backbone's layers from `trainFrom` to the cut train (and federate) with the
 * heads. Sites cache the frozen part's output for each tile (the feature map `trainFrom` reads), so
 * a training step only runs the top blocks. The trainable model is built from copies of the
 * backbone's layers (same names and configuration, the backbone's weights copied in), so training
 * never touches the shared backbone model; batch normalisation layers become FrozenBatchNorm.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { attachHeads, modelOptionsOf } from '../models';
import { FrozenBatchNorm } from './frozen-batch-norm';
import { layerInputName, rewire } from './rewire';

/** A trainable copy of a backbone layer (the source may mark its layers non-trainable). */
function copyOf(layer: tfl.layers.Layer): tfl.layers.Layer {
  if (layer.getClassName() === 'BatchNormalization') {
    const config = layer.getConfig();
    return new FrozenBatchNorm({ name: layer.name, epsilon: Number(config['epsilon'] ?? 1e-3), trainable: true });
  }
  const entry = tf.serialization.SerializationMap.getMap().classNameMap[layer.getClassName()];
  if (entry === undefined) throw new ValidationError(`backbone layer "${layer.name}": class ${layer.getClassName()} is not registered with tfjs`);
  const [cls, fromConfig] = entry;
  return fromConfig(cls, { ...layer.getConfig(), trainable: true }) as tfl.layers.Layer;
}

/**
 * The trainable model of a fine-tuning spec: input = the feature map that `trainFrom` reads (the
 * cached frozen part's output), then copies of the backbone layers up to the cut, then the heads.
 * `backbone` is the loaded backbone (backboneModel); its weights are copied, not shared.
 */
export function buildFineTuneModel(spec: ModelSpec, backbone: tfl.LayersModel, seed: number): tfl.LayersModel {
  const b = spec.backbone;
  if (b?.trainFrom === undefined) throw new ValidationError('model.backbone.trainFrom: not a fine-tuning spec');
  const boundary = layerInputName(backbone, b.trainFrom);
  const shape = (backbone.getLayer(boundary).outputShape as (number | null)[]).slice(1);
  if (shape.some((d) => d === null)) throw new ValidationError(`backbone layer "${boundary}" has no fixed output shape`);
  const input = tfl.input({ name: 'features', shape: shape as number[] });
  const copies = new Map<string, { original: tfl.layers.Layer; copy: tfl.layers.Layer }>();
  const features = rewire(backbone, new Map([[boundary, input]]), b.cut, (layer) => {
    const copy = copyOf(layer);
    copies.set(layer.name, { original: layer, copy });
    return copy;
  });
  const model = tfl.model({ name: 'backbone_finetune', inputs: input, outputs: attachHeads(features, spec, { ...modelOptionsOf(spec), headBatchNorm: modelOptionsOf(spec).batchNorm }, seed + 1000) });
  for (const { original, copy } of copies.values()) {
    const w = original.getWeights();
    if (w.length > 0) copy.setWeights(w);
  }
  return model;
}
