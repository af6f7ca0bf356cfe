import { LabeledImages } from '@histofed/fl-core';
import { applyHedJitter, augmentImage, augmentationRandom, sampleHedJitter } from '@histofed/data';
import { shareImages } from '@histofed/ml';

/**
 * A freshly augmented copy of the site's training images for one round: flips, 90-degree
 * rotations, small zoom and HSV colour jitter, and with `hedSigma` > 0 HED stain jitter, drawn from
 * (round seed, image index), so a round is reproducible and every round sees new variants. The
 * decoded originals stay untouched (cached).
 */
export function augmentTrainingSet(data: LabeledImages, roundSeed: number, hedSigma = 0): LabeledImages {
  const per = data.imageSize * data.imageSize * 3;
  const images = new Float32Array(data.images);
  for (let i = 0; i < data.count; i++) {
    const image = images.subarray(i * per, (i + 1) * per);
    const rand = augmentationRandom(roundSeed, 0, i);
    augmentImage(image, data.imageSize, rand);
    if (hedSigma > 0) image.set(applyHedJitter(image, sampleHedJitter(rand, hedSigma)));
  }
  return shareImages({ ...data, images });
}
