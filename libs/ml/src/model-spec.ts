import type { ModelSpec } from '@histofed/fl-core';
import { resolveBackbone, type BackboneLocation } from './backbones/backbone';
import { validateModelSpec } from './models';

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
