import { ValidationError } from '@histofed/fl-core';
import {
  DEFAULT_AUGMENTATION,
  IDENTITY_AUGMENTATION,
  NO_AUGMENTATION,
  applyAugmentation,
  augmentImage,
  augmentationRandom,
  augmentationSeed,
  sampleAugmentParams,
  type AugmentParams,
} from './augmentation';
import { mulberry32 } from './prng';

/** A size x size x 3 image whose pixel (y, x) holds [y, x, 7] / 10 (values in [0, 1]). */
function coordImage(size: number): Float32Array {
  const px = new Float32Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) px.set([y / 10, x / 10, 0.7], (y * size + x) * 3);
  }
  return px;
}

/** The (y, x) coordinates an augmented coordImage holds, as a size x size grid of "y,x" strings. */
function grid(px: Float32Array, size: number): string[][] {
  return Array.from({ length: size }, (_, y) =>
    Array.from({ length: size }, (_, x) => {
      const o = (y * size + x) * 3;
      return `${Math.round(px[o] * 10)},${Math.round(px[o + 1] * 10)}`;
    }),
  );
}

const params = (p: Partial<AugmentParams>): AugmentParams => ({ ...IDENTITY_AUGMENTATION, ...p });

function randomImage(size: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  return Float32Array.from({ length: size * size * 3 }, () => rand());
}

describe('augmentation', () => {
  const size = 3;
  const original = grid(coordImage(size), size);

  it('moves pixels exactly for flips and quarter turns (counter-clockwise)', () => {
    expect(original).toEqual([
      ['0,0', '0,1', '0,2'],
      ['1,0', '1,1', '1,2'],
      ['2,0', '2,1', '2,2'],
    ]);
    const apply = (p: Partial<AugmentParams>) => grid(applyAugmentation(coordImage(size), size, params(p)), size);
    expect(apply({ flipHorizontal: true })).toEqual([
      ['0,2', '0,1', '0,0'],
      ['1,2', '1,1', '1,0'],
      ['2,2', '2,1', '2,0'],
    ]);
    expect(apply({ flipVertical: true })).toEqual([
      ['2,0', '2,1', '2,2'],
      ['1,0', '1,1', '1,2'],
      ['0,0', '0,1', '0,2'],
    ]);
    // One quarter turn counter-clockwise: the right column becomes the top row.
    expect(apply({ rotations: 1 })).toEqual([
      ['0,2', '1,2', '2,2'],
      ['0,1', '1,1', '2,1'],
      ['0,0', '1,0', '2,0'],
    ]);
    expect(apply({ rotations: 2 })).toEqual([
      ['2,2', '2,1', '2,0'],
      ['1,2', '1,1', '1,0'],
      ['0,2', '0,1', '0,0'],
    ]);
    expect(apply({ rotations: 3 })).toEqual([
      ['2,0', '1,0', '0,0'],
      ['2,1', '1,1', '0,1'],
      ['2,2', '1,2', '0,2'],
    ]);
    // Flip first, then rotate: a horizontal flip then a quarter turn is the transpose.
    expect(apply({ flipHorizontal: true, rotations: 1 })).toEqual([
      ['0,0', '1,0', '2,0'],
      ['0,1', '1,1', '2,1'],
      ['0,2', '1,2', '2,2'],
    ]);
    // Both flips are a half turn.
    expect(apply({ flipHorizontal: true, flipVertical: true })).toEqual(apply({ rotations: 2 }));
  });

  it('keeps exact values (no resampling) and undoes itself: four quarter turns, two flips', () => {
    const img = randomImage(8, 3);
    const copy = img.slice();
    for (let i = 0; i < 4; i++) applyAugmentation(img, 8, params({ rotations: 1 }));
    expect(img).toEqual(copy);
    applyAugmentation(img, 8, params({ flipHorizontal: true, rotations: 3 }));
    expect(img).not.toEqual(copy);
    expect(Array.from(img).sort()).toEqual(Array.from(copy).sort()); // a permutation of the pixels
    applyAugmentation(img, 8, params({ rotations: 1 }));
    applyAugmentation(img, 8, params({ flipHorizontal: true }));
    expect(img).toEqual(copy);
  });

  it('identity parameters and NO_AUGMENTATION leave the image untouched', () => {
    const img = randomImage(6, 4);
    const copy = img.slice();
    expect(applyAugmentation(img, 6, IDENTITY_AUGMENTATION)).toBe(img);
    expect(img).toEqual(copy);
    augmentImage(img, 6, mulberry32(9), NO_AUGMENTATION);
    expect(img).toEqual(copy);
  });

  it('zooms in with bilinear resampling: constant stays constant, a centred zoom keeps symmetry', () => {
    const flat = new Float32Array(16 * 16 * 3).fill(0.4);
    applyAugmentation(flat, 16, params({ zoom: 1.1, cropX: 0.2, cropY: 0.9 }));
    expect(Math.max(...Array.from(flat, (v) => Math.abs(v - 0.4)))).toBeLessThan(1e-6);

    // Horizontal ramp 0..1: a centred zoom narrows the range symmetrically and keeps it monotone.
    const n = 20;
    const ramp = new Float32Array(n * n * 3);
    for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) ramp.fill(x / (n - 1), (y * n + x) * 3, (y * n + x) * 3 + 3);
    applyAugmentation(ramp, n, params({ zoom: 1.1 }));
    const row = Array.from({ length: n }, (_, x) => ramp[x * 3]);
    for (let x = 1; x < n; x++) expect(row[x]).toBeGreaterThan(row[x - 1]);
    expect(row[0]).toBeGreaterThan(0.02);
    expect(row[0] + row[n - 1]).toBeCloseTo(1, 5);
    // The crop side is n / 1.1, so the output spans about 1/1.1 of the input range.
    expect(row[n - 1] - row[0]).toBeCloseTo((n / 1.1 - 1) / (n - 1), 2);

    // A crop at the left edge starts at the image's left edge.
    const left = new Float32Array(n * n * 3);
    for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) left.fill(x / (n - 1), (y * n + x) * 3, (y * n + x) * 3 + 3);
    applyAugmentation(left, n, params({ zoom: 1.1, cropX: 0 }));
    expect(left[0]).toBeLessThan(0.01);
    expect(left[(n - 1) * 3]).toBeLessThan(0.96);
  });

  it('colour jitter is bounded: grey stays grey under hue and saturation, brightness scales V', () => {
    const grey = new Float32Array([0.5, 0.5, 0.5, 0.2, 0.2, 0.2, 1, 1, 1, 0, 0, 0]);
    const g = grey.slice();
    applyAugmentation(g, 2, params({ hueShift: 0.3, saturationScale: 1.5 }));
    for (let i = 0; i < g.length; i++) expect(g[i]).toBeCloseTo(grey[i], 6);

    const img = randomImage(16, 11);
    const bright = applyAugmentation(img.slice(), 16, params({ brightnessScale: 1.1 }));
    const dark = applyAugmentation(img.slice(), 16, params({ brightnessScale: 0.9 }));
    let worst = 0;
    for (let k = 0; k < img.length; k += 3) {
      const v = Math.max(img[k], img[k + 1], img[k + 2]);
      worst = Math.max(
        worst,
        Math.abs(Math.max(dark[k], dark[k + 1], dark[k + 2]) - 0.9 * v),
        Math.abs(Math.max(bright[k], bright[k + 1], bright[k + 2]) - Math.min(1, 1.1 * v)),
      );
    }
    expect(worst).toBeLessThan(1e-5);

    // Hue shift of a pure red by 1/3 of the circle is pure green; small shifts move little.
    const red = applyAugmentation(new Float32Array([1, 0, 0]), 1, params({ hueShift: 1 / 3 }));
    expect(Array.from(red).map((v) => Number(v.toFixed(5)))).toEqual([0, 1, 0]);
    const pink = new Float32Array([0.85, 0.45, 0.65]); // H&E eosin-like
    const shifted = applyAugmentation(pink.slice(), 1, params({ hueShift: 0.02 }));
    for (let c = 0; c < 3; c++) expect(Math.abs(shifted[c] - pink[c])).toBeLessThan(0.05);
  });

  it('keeps values in [0,1] under the strongest options', () => {
    const strongest = { maxZoom: 0.5, hue: 0.5, saturation: 1, brightness: 1 };
    let lo = Infinity;
    let hi = -Infinity;
    for (let seed = 0; seed < 20; seed++) {
      const img = randomImage(12, 100 + seed);
      augmentImage(img, 12, mulberry32(seed), strongest);
      for (const v of img) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
    }
    expect(lo).toBeGreaterThanOrEqual(0);
    expect(hi).toBeLessThanOrEqual(1);
    expect(hi - lo).toBeGreaterThan(0.9);
  });

  it('is deterministic from the seed, per (seed, epoch, image index)', () => {
    const base = randomImage(10, 5);
    const run = (seed: number, epoch: number, index: number) =>
      augmentImage(base.slice(), 10, augmentationRandom(seed, epoch, index), DEFAULT_AUGMENTATION);
    expect(run(1, 0, 3)).toEqual(run(1, 0, 3));
    expect(run(1, 0, 3)).not.toEqual(run(1, 0, 4));
    expect(run(1, 0, 3)).not.toEqual(run(1, 1, 3));
    expect(run(1, 0, 3)).not.toEqual(run(2, 0, 3));
    expect(augmentationSeed(1, 0, 3)).toBe(augmentationSeed(1, 0, 3));
    expect(new Set([augmentationSeed(1, 0, 3), augmentationSeed(1, 3, 0), augmentationSeed(3, 0, 1)]).size).toBe(3);
  });

  it('draws a fixed number of values, so disabling one option keeps the others', () => {
    const all = sampleAugmentParams(mulberry32(42), {});
    const noFlip = sampleAugmentParams(mulberry32(42), { flip: false });
    expect(noFlip.flipHorizontal).toBe(false);
    expect(noFlip.flipVertical).toBe(false);
    expect({ ...noFlip, flipHorizontal: all.flipHorizontal, flipVertical: all.flipVertical }).toEqual(all);
    // Sampled parameters stay inside the documented ranges over many draws.
    const rand = mulberry32(7);
    const drawn = Array.from({ length: 400 }, () => sampleAugmentParams(rand, { zoomCrop: 'random' }));
    const range = (f: (p: AugmentParams) => number) => [Math.min(...drawn.map(f)), Math.max(...drawn.map(f))];
    const [zoomLo, zoomHi] = range((p) => p.zoom);
    expect(zoomLo).toBeGreaterThanOrEqual(1);
    expect(zoomHi).toBeLessThanOrEqual(1.1);
    expect(zoomHi).toBeGreaterThan(1.09);
    expect(Math.max(...range((p) => Math.abs(p.hueShift)))).toBeLessThanOrEqual(0.02);
    expect(Math.max(...range((p) => Math.abs(p.saturationScale - 1)))).toBeLessThanOrEqual(0.1);
    expect(Math.max(...range((p) => Math.abs(p.brightnessScale - 1)))).toBeLessThanOrEqual(0.1);
    const [cropLo, cropHi] = range((p) => p.cropY);
    expect(cropLo).toBeGreaterThanOrEqual(0);
    expect(cropHi).toBeLessThan(1);
    expect(new Set(drawn.map((p) => p.rotations))).toEqual(new Set([0, 1, 2, 3]));
    const flips = drawn.filter((p) => p.flipHorizontal).length;
    expect(flips).toBeGreaterThan(150);
    expect(flips).toBeLessThan(250);
    expect(sampleAugmentParams(mulberry32(1), { zoomCrop: 'centre' })).toMatchObject({ cropX: 0.5, cropY: 0.5 });
  });

  it('rejects bad options and mismatched sizes', () => {
    const rand = mulberry32(1);
    expect(() => sampleAugmentParams(rand, { hue: 0.7 })).toThrow(ValidationError);
    expect(() => sampleAugmentParams(rand, { maxZoom: -0.1 })).toThrow(/maxZoom/);
    expect(() => sampleAugmentParams(rand, { brightness: Number.NaN })).toThrow(/brightness/);
    expect(() => sampleAugmentParams(rand, { zoomCrop: 'corner' as 'centre' })).toThrow(/zoomCrop/);
    expect(() => applyAugmentation(new Float32Array(10), 2, IDENTITY_AUGMENTATION)).toThrow(/expected 2x2x3/);
    expect(() => applyAugmentation(new Float32Array(12), 2, params({ zoom: 0.5 }))).toThrow(/zoom/);
  });
});
