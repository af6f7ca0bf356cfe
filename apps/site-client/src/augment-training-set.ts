import { LabeledImages } from '@histofed/fl-core';
import { augmentImage, augmentationRandom } from '@histofed/data';
import { shareImages } from '@histofed/ml';

/**
 * A freshly augmented copy of the site's training images for one round: flips, 90-degree
 * rotations, small zoom and HSV colour jitter, drawn from (round seed, image index), so a round is
 * reproducible and every round sees new variants. The decoded originals stay untouched (cached).
 */
export function augmentTrainingSet(data: LabeledImages, roundSeed: number): LabeledImages {
  const per = data.imageSize * data.imageSize * 3;
  const images = new Float32Array(data.images);
  for (let i = 0; i < data.count; i++) {
    augmentImage(images.subarray(i * per, (i + 1) * per), data.imageSize, augmentationRandom(roundSeed, 0, i));
  }
  return shareImages({ ...data, images });
}
