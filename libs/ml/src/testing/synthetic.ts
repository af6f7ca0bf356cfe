/** Synthetic labelled images for tests, demos and benchmarks (no files needed). */
import type { LabeledImages } from '@histofed/fl-core';
import { mulberry32 } from '../random';

/**
 * `count` RGB images of `imageSize` px: class 0 dark (values in [0, 0.45)), class 1 bright
 * ([0.55, 1)), with per-pixel noise; labels alternate; `patients` groups of consecutive images.
 */
export function brightDarkImages(count: number, imageSize: number, seed = 1, patients = 4): LabeledImages {
  const rand = mulberry32(seed);
  const per = imageSize * imageSize * 3;
  const images = new Float32Array(count * per);
  const labels = new Int32Array(count);
  const groups: string[] = [];
  for (let i = 0; i < count; i++) {
    const label = i % 2;
    labels[i] = label;
    groups.push(`patient-${Math.floor((i * patients) / count)}`);
    const base = label === 1 ? 0.55 : 0;
    for (let j = 0; j < per; j++) images[i * per + j] = base + rand() * 0.45;
  }
  return { images, labels, count, imageSize, groups };
}

/**
 * Two-stage synthetic images: stage 1 as in brightDarkImages (dark 0 / bright 1), and within each
 * class two subtypes told apart by the dominant colour channel (subtype 0 and 2 red, 1 and 3
 * blue), so subtypeParents = [0, 0, 1, 1]. Subtypes cycle 0, 2, 1, 3 (labels alternate).
 */
export function twoStageImages(count: number, imageSize: number, seed = 1, patients = 4): LabeledImages {
  const rand = mulberry32(seed);
  const per = imageSize * imageSize * 3;
  const images = new Float32Array(count * per);
  const labels = new Int32Array(count);
  const subtypes = new Int32Array(count);
  const groups: string[] = [];
  const cycle = [0, 2, 1, 3];
  for (let i = 0; i < count; i++) {
    const subtype = cycle[i % 4];
    const label = subtype < 2 ? 0 : 1;
    labels[i] = label;
    subtypes[i] = subtype;
    groups.push(`patient-${Math.floor((i * patients) / count)}`);
    const base = label === 1 ? 0.55 : 0;
    const tinted = subtype % 2 === 0 ? 0 : 2;
    for (let p = 0; p < imageSize * imageSize; p++) {
      for (let c = 0; c < 3; c++) {
        const v = base + rand() * 0.45 * (c === tinted ? 1 : 0.3);
        images[i * per + p * 3 + c] = v;
      }
    }
  }
  return { images, labels, subtypes, count, imageSize, groups };
}
