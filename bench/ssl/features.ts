/**
 * The frozen ImageNet tile features of bench:ssl (arms imagenet and imagenetSsl): the default run
 * model's backbone (MobileNetV2 cut at block_10_depthwise_relu, 224 px tiles at native resolution,
 * the covering grid plus 8 augmented training views per image), through the shared feature cache.
 */
import type { ModelSpec } from '@histofed/fl-core';
import { DEFAULT_RUN_MODEL } from '@histofed/fl-core';
import type { BreakHisImage } from '@histofed/data';
import { resolveBackbone } from '@histofed/ml';
import type { DecodedSet } from '../accuracy/data-slices';
import { loadTileFeatureSet } from '../lib/tile-features';

export async function imagenetFeatures(images: readonly BreakHisImage[], o: { cacheDir?: string; cache: boolean; log: (line: string) => void }): Promise<{ spec: ModelSpec; decoded: DecodedSet }> {
  const backbone = DEFAULT_RUN_MODEL.backbone;
  if (backbone === undefined) throw new Error('the default run model has no backbone');
  const resolved = await resolveBackbone(backbone, {}, DEFAULT_RUN_MODEL.imageSize);
  const spec: ModelSpec = { ...DEFAULT_RUN_MODEL, backbone: resolved.spec };
  const decoded = await loadTileFeatureSet(images, spec, o);
  return { spec, decoded };
}
