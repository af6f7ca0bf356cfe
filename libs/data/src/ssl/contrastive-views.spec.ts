import { hashSeed, mulberry32 } from '../prng';
import type { ScaledImage } from '../tiles/tile-reader';
import { CONTRASTIVE_VIEWS, contrastivePair, gaussianBlur } from './contrastive-views';

/** A 64x48 image: left half pink, right half purple, with a little noise. */
function image(): ScaledImage {
  const width = 64;
  const height = 48;
  const rand = mulberry32(7);
  const pixels = new Float32Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const base = x < 32 ? [0.9, 0.6, 0.75] : [0.45, 0.3, 0.6];
      for (let c = 0; c < 3; c++) pixels[(y * width + x) * 3 + c] = base[c] + 0.05 * (rand() - 0.5);
    }
  }
  return { width, height, pixels };
}

const mean = (v: Float32Array) => v.reduce((a, b) => a + b, 0) / v.length;

describe('contrastive views (issue 19)', () => {
  it('gives two views of the tile size with values in [0, 1], the same pair for the same seed, different views', () => {
    const img = image();
    const pair = contrastivePair(img, 24, mulberry32(hashSeed(1, 'pair', 0)));
    const again = contrastivePair(img, 24, mulberry32(hashSeed(1, 'pair', 0)));
    for (const v of [pair.a, pair.b]) {
      expect(v).toHaveLength(24 * 24 * 3);
      expect(v.every((x) => x >= 0 && x <= 1)).toBe(true);
    }
    expect(Array.from(again.a)).toEqual(Array.from(pair.a));
    expect(Array.from(again.b)).toEqual(Array.from(pair.b));
    expect(Array.from(pair.a)).not.toEqual(Array.from(pair.b));
  });

  it('without colour changes, the two views of a flat tile keep its colour: they share the tissue, not a position', () => {
    const flat: ScaledImage = { width: 40, height: 40, pixels: new Float32Array(40 * 40 * 3).fill(0.6) };
    const plain = { ...CONTRASTIVE_VIEWS, augment: { ...CONTRASTIVE_VIEWS.augment, hue: 0, saturation: 0, brightness: 0 }, hedSigma: 0 };
    const { a, b } = contrastivePair(flat, 16, mulberry32(3), plain);
    expect(mean(a)).toBeCloseTo(0.6, 5);
    expect(mean(b)).toBeCloseTo(0.6, 5);
  });

  it('blurs: an edge gets softer and the mean stays', () => {
    const size = 8;
    const edge = new Float32Array(size * size * 3).map((_, i) => (Math.floor(i / 3) % size < size / 2 ? 0 : 1));
    const before = Float32Array.from(edge);
    gaussianBlur(edge, size, 1);
    expect(mean(edge)).toBeCloseTo(mean(before), 5);
    const at = (v: Float32Array, x: number) => v[(2 * size + x) * 3];
    expect(at(edge, 3)).toBeGreaterThan(at(before, 3));
    expect(at(edge, 4)).toBeLessThan(at(before, 4));
    expect(() => gaussianBlur(edge, size, 0)).toThrow(/sigma/);
    expect(() => contrastivePair(image(), 24, mulberry32(1), { ...CONTRASTIVE_VIEWS, blurProbability: 2 })).toThrow(/blurProbability/);
  });
});
