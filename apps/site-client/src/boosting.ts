import { LabeledImages, ModelSpec, WeightSet } from '@histofed/fl-core';
import { boostingImageWeights, buildModelAsync, evaluateModelAsync, perImage, rowWeightsFromImages, setWeights } from '@histofed/ml';
import { BoostingTask } from '@histofed/protocol';

export interface BoostingRowWeights {
  /** One weight per training row (TrainOptions.sampleWeights). */
  readonly weights: Float32Array;
  readonly images: number;
  /** Share of the training images the current ensemble (the members' mean) gets right: for the site's log only. */
  readonly ensembleAccuracy: number;
  readonly minWeight: number;
  readonly maxWeight: number;
}

/**
 * Federated boosting at the site (issue 16, a 'boost' task): the current ensemble — the mean of the
 * members' per-image probabilities on this site's own training rows — gives each training image
 * its boosting weight (libs/ml boostingImageWeights: heavier where the ensemble errs, mean 1 within
 * each class), spread over the image's rows. Computed here and used here: nothing of it leaves.
 */
export async function boostingRowWeights(
  spec: ModelSpec,
  members: readonly WeightSet[],
  train: LabeledImages,
  task: Pick<BoostingTask, 'strength' | 'maxRatio'>,
  backboneDir?: string,
): Promise<BoostingRowWeights> {
  if (members.length === 0) throw new Error('boosting: no ensemble member to weigh the images with');
  const layout = { numClasses: spec.numClasses, subtypeParents: spec.subtypeParents };
  const model = await buildModelAsync(spec, 1, { dir: backboneDir });
  let mean: Float32Array | undefined;
  try {
    for (const weights of members) {
      setWeights(model, weights);
      const { probabilities } = await evaluateModelAsync(model, train, { subtypeParents: spec.subtypeParents });
      mean ??= new Float32Array(probabilities.length);
      for (let i = 0; i < probabilities.length; i++) mean[i] += probabilities[i] / members.length;
    }
  } finally {
    model.dispose();
  }
  const { data, probabilities } = perImage(train, mean as Float32Array, layout);
  const width = spec.numClasses + (spec.subtypeParents?.length ?? 0);
  const imageWeights = boostingImageWeights(probabilities, data.labels, spec.numClasses, { strength: task.strength, maxRatio: task.maxRatio, width });
  let right = 0;
  for (let i = 0; i < data.count; i++) {
    let best = 0;
    for (let c = 1; c < spec.numClasses; c++) if (probabilities[i * width + c] > probabilities[i * width + best]) best = c;
    if (best === data.labels[i]) right++;
  }
  let minWeight = Infinity;
  let maxWeight = 0;
  for (const w of imageWeights) {
    minWeight = Math.min(minWeight, w);
    maxWeight = Math.max(maxWeight, w);
  }
  return { weights: rowWeightsFromImages(imageWeights, train), images: data.count, ensembleAccuracy: right / Math.max(1, data.count), minWeight, maxWeight };
}
