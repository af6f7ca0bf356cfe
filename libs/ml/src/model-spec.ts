import type * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { backboneModel, resolveBackbone, type BackboneLocation } from './backbones/backbone';
import { buildFineTuneModel } from './backbones/fine-tune';
import { buildModel, validateModelSpec } from './models';

/**
 * A spec checked and completed for a run: a backbone is resolved against this process's copy
 * (`sha256` and `features` filled in, the cut and trainFrom layers checked), then the whole spec
 * is validated. Throws a ValidationError naming the field.
 */
export async function completeModelSpec(spec: ModelSpec, where: BackboneLocation = {}): Promise<ModelSpec> {
  let out = spec;
  if (spec.backbone !== undefined) {
    const resolved = await resolveBackbone(spec.backbone, where, spec.imageSize);
    out = { ...spec, backbone: resolved.spec };
  }
  validateModelSpec(out);
  return out;
}

/**
 * Builds the trainable model of any spec: buildModel's, or for a fine-tuning backbone spec
 * (backbone.trainFrom) the backbone's top blocks + heads, which needs the backbone loaded (checked
 * against spec.backbone.sha256). The caller owns the model.
 */
export async function buildModelAsync(spec: ModelSpec, seed = 1, where: BackboneLocation = {}): Promise<tfl.LayersModel> {
  if (spec.backbone?.trainFrom === undefined) return buildModel(spec, seed);
  validateModelSpec(spec);
  if (!Number.isInteger(seed)) throw new ValidationError(`seed: must be an integer, got ${seed}`);
  const resolved = await resolveBackbone(spec.backbone, where, spec.imageSize);
  return buildFineTuneModel(spec, await backboneModel(resolved.source, spec.imageSize, spec.backbone.cut), seed);
}
