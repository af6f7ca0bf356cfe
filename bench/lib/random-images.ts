import { LabeledImages } from '@histofed/fl-core';

/** Deterministic pseudo-random RGB images in [0, 1) with alternating labels (benchmark inputs). */
export function randomImages(count: number, size: number, seed: number): LabeledImages {
  const images = new Float32Array(count * size * size * 3);
  let s = seed >>> 0;
  for (let i = 0; i < images.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    images[i] = s / 4294967296;
  }
  const labels = Int32Array.from({ length: count }, (_, i) => i % 2);
  return { images, labels, count, imageSize: size };
}
