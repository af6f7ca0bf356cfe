import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { tileBags } from './tile-bags';

/** Tile rows of 2 features: image i's row r holds [i, r]; positions (r/10, i/10). */
function rows(tilesPerImage: number[], labels: number[]): LabeledImages {
  const imageOf: number[] = [];
  const values: number[] = [];
  const positions: number[] = [];
  tilesPerImage.forEach((n, i) => {
    for (let r = 0; r < n; r++) {
      imageOf.push(i);
      values.push(i, r);
      positions.push(r / 10, i / 10);
    }
  });
  const count = imageOf.length;
  return {
    images: Float32Array.from(values),
    labels: Int32Array.from(imageOf.map((i) => labels[i])),
    count,
    imageSize: 32,
    sampleShape: [2],
    imageOf: Int32Array.from(imageOf),
    groups: imageOf.map((i) => `p${i}`),
    subtypes: Int32Array.from(imageOf.map((i) => i + 3)),
    tilePositions: Float32Array.from(positions),
  };
}

describe('tileBags', () => {
  it('packs each image into one row of slots [features, mask, y, x], padding with zeros, for bags of unequal size', () => {
    const bags = tileBags(rows([3, 1], [1, 0]), { bagTiles: 4, overflow: 'error' });
    expect(bags.count).toBe(2);
    expect(bags.sampleShape).toEqual([4, 5]);
    expect(Array.from(bags.labels)).toEqual([1, 0]);
    expect(Array.from(bags.subtypes as Int32Array)).toEqual([3, 4]);
    expect(bags.groups).toEqual(['p0', 'p1']);
    expect(bags.imageOf).toBeUndefined();
    const slot = (b: number, k: number) => Array.from(bags.images.subarray((b * 4 + k) * 5, (b * 4 + k + 1) * 5)).map((v) => Math.round(v * 100) / 100);
    expect(slot(0, 0)).toEqual([0, 0, 1, 0, 0]);
    expect(slot(0, 2)).toEqual([0, 2, 1, 0.2, 0]);
    expect(slot(0, 3)).toEqual([0, 0, 0, 0, 0]);
    expect(slot(1, 0)).toEqual([1, 0, 1, 0, 0.1]);
    expect(slot(1, 1)).toEqual([0, 0, 0, 0, 0]);
  });

  it('joins several row sets of the same images (grid, then views) in order', () => {
    const grid = rows([2, 2], [0, 1]);
    const views = { ...rows([1, 1], [0, 1]), images: Float32Array.from([9, 9, 8, 8]) };
    const bags = tileBags([grid, views], { bagTiles: 3, overflow: 'error' });
    expect(Array.from(bags.images.subarray(2 * 5, 3 * 5)).slice(0, 3)).toEqual([9, 9, 1]);
    expect(Array.from(bags.images.subarray(5 * 5, 6 * 5)).slice(0, 3)).toEqual([8, 8, 1]);
  });

  it('truncates training bags to their first rows and names the image whose evaluation bag overflows', () => {
    const truncated = tileBags(rows([5], [0]), { bagTiles: 2, overflow: 'truncate' });
    expect(Array.from(truncated.images)).toEqual([0, 0, 1, 0, 0, 0, 1, 1, 0.1, 0].map((v) => Math.fround(v)));
    expect(() => tileBags(rows([5], [0]), { bagTiles: 2, overflow: 'error', imageName: () => 'SOB_B_A-1.png' })).toThrow(
      /SOB_B_A-1.png has 5 tiles, the model's bags hold 2/,
    );
  });

  it('refuses rows without positions, without imageOf, of pixels, or an invalid bag size', () => {
    const base = rows([2], [0]);
    expect(() => tileBags({ ...base, tilePositions: undefined }, { bagTiles: 4, overflow: 'error' })).toThrow(/no tile positions/);
    expect(() => tileBags({ ...base, imageOf: undefined }, { bagTiles: 4, overflow: 'error' })).toThrow(/no imageOf/);
    expect(() => tileBags({ ...base, sampleShape: undefined }, { bagTiles: 4, overflow: 'error' })).toThrow(/feature vectors/);
    expect(() => tileBags(base, { bagTiles: 0, overflow: 'error' })).toThrow(ValidationError);
    expect(() => tileBags(base, { bagTiles: 1000, overflow: 'error' })).toThrow(/bagTiles/);
  });
});
