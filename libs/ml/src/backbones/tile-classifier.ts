/**
 * A saved backbone model is one tfjs Layers model that classifies a tile: the frozen feature part
 * (input scaling, backbone layers, pooling) followed by the trained part (heads, and the fine-tuned
 * blocks). Any tfjs can load and run it. HistoFed splits it again to compute tile features once
 * (and cache them) and to run the trained part on them.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { buildModelAsync } from '../model-spec';
import { savesTrainedPartOnly } from '../models';
import { getWeights, setWeights } from '../weights-bridge';
import { FEATURE_POOL_LAYER, featureExtractorOf, tileFeatureExtractor, type BackboneLocation, type TileFeatureExtractor } from './backbone';
import { inputLayerName, layerInputName, rewire } from './rewire';

/** The tile classifier: `featureModel`'s output fed to `trainable` (both keep their layers and weights). */
export function composeTileClassifier(featureModel: tfl.LayersModel, trainable: tfl.LayersModel): tfl.LayersModel {
  const names = new Set(featureModel.layers.map((l) => l.name));
  for (const l of trainable.layers) {
    if (l.getClassName() !== 'InputLayer' && names.has(l.name)) {
      throw new ValidationError(`layer name "${l.name}" occurs in the backbone and in the trained part`);
    }
  }
  const out = rewire(trainable, new Map([[inputLayerName(trainable), featureModel.outputs[0]]]), trainable.outputLayers[0].name);
  return tfl.model({ name: 'tile_classifier', inputs: featureModel.inputs, outputs: out });
}

/** The name of the layer whose output the trained part reads, in a saved tile classifier of `spec`. */
export function featureBoundary(model: tfl.LayersModel, spec: ModelSpec): string {
  const b = spec.backbone;
  if (b === undefined) throw new ValidationError('model.backbone: the spec has no backbone');
  return b.trainFrom === undefined ? FEATURE_POOL_LAYER : layerInputName(model, b.trainFrom);
}

export interface SplitTileClassifier {
  /** The frozen part: tile in, feature row out (shares weights with the loaded model). */
  readonly extractor: TileFeatureExtractor;
  /** The trained part as built from the spec (own weights, copied from the loaded model); the caller disposes it. */
  readonly trainable: tfl.LayersModel;
}

/**
 * Splits a loaded tile classifier of `spec` (a backbone spec) into its feature part and its trained
 * part (a fine-tuning spec's trained part is rebuilt from the local backbone, checked by its hash).
 * A saved bag or fusion model is its trained part only: the feature part is the local backbone's
 * (checked by spec.backbone.sha256; shared per process, not to be disposed).
 */
export async function splitTileClassifier(model: tfl.LayersModel, spec: ModelSpec, where: BackboneLocation = {}): Promise<SplitTileClassifier> {
  const backbone = spec.backbone as NonNullable<ModelSpec['backbone']>;
  const extractor = savesTrainedPartOnly(spec)
    ? await tileFeatureExtractor(backbone, spec.imageSize, where)
    : featureExtractorOf(
        tfl.model({ name: 'tile_features', inputs: model.inputs, outputs: model.getLayer(featureBoundary(model, spec)).output as tfl.SymbolicTensor }),
        backbone,
      );
  const trainable = await buildModelAsync(spec, 1, where);
  try {
    const have = new Map(getWeights(model).map((w) => [w.name, w]));
    const mine = getWeights(trainable).map((w) => {
      const v = have.get(w.name);
      if (v === undefined || v.shape.join() !== w.shape.join()) {
        throw new ValidationError(`saved tile classifier: weight "${w.name}" of the trained part is missing or has another shape`);
      }
      return v;
    });
    setWeights(trainable, mine);
  } catch (e) {
    trainable.dispose();
    throw e;
  }
  return { extractor, trainable };
}
