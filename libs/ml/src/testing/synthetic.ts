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
