import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { bagBatch, bagsFromRows } from './bags';

const DIM = 2;
// Rows interleave three images of 2, 3 and 1 tiles; row r's features are [r, -r].
const imageOf = Int32Array.from([1, 0, 1, 2, 0, 1]);
const rows: LabeledImages = {
  images: Float32Array.from([0, 1, 2, 3, 4, 5].flatMap((r) => [r + 1, -(r + 1)])),
  labels: Int32Array.from([1, 0, 1, 1, 0, 1]),
  subtypes: Int32Array.from([3, 0, 3, 2, 0, 3]),
  groups: ['p2', 'p1', 'p2', 'p3', 'p1', 'p2'],
  magnifications: [100, 40, 100, 400, 40, 100],
  count: 6,
  imageSize: 224,
  sampleShape: [DIM],
  imageOf,
};

describe('bagsFromRows', () => {
  it('groups tile rows per image in row order, zero-padded, with a mask and the rows of each slot', () => {
    const bags = bagsFromRows(rows);
    expect(bags.count).toBe(3);
    expect(bags.maxTiles).toBe(3);
    expect(bags.dim).toBe(DIM);
    expect(Array.from(bags.tileCounts)).toEqual([2, 3, 1]);
    expect(Array.from(bags.tileRows)).toEqual([1, 4, -1, 0, 2, 5, 3, -1, -1]);
    expect(Array.from(bags.mask)).toEqual([1, 1, 0, 1, 1, 1, 1, 0, 0]);
    expect(Array.from(bags.features)).toEqual([2, -2, 5, -5, 0, 0, 1, -1, 3, -3, 6, -6, 4, -4, 0, 0, 0, 0]);
    expect(Array.from(bags.labels)).toEqual([0, 1, 1]);
    expect(Array.from(bags.subtypes as Int32Array)).toEqual([0, 3, 2]);
    expect(bags.groups).toEqual(['p1', 'p2', 'p3']);
    expect(bags.magnifications).toEqual([40, 100, 400]);
  });

  it('omits the per-image fields the rows do not have', () => {
    const bags = bagsFromRows({ ...rows, subtypes: undefined, groups: undefined, magnifications: undefined });
    expect(bags.subtypes).toBeUndefined();
    expect(bags.groups).toBeUndefined();
    expect(bags.magnifications).toBeUndefined();
  });

  it('refuses rows without imageOf, naming the field', () => {
    expect(() => bagsFromRows({ ...rows, imageOf: undefined })).toThrow(ValidationError);
    expect(() => bagsFromRows({ ...rows, imageOf: undefined })).toThrow(/data\.imageOf: .*no imageOf/);
  });

  it('refuses whole images, a gap in the image indices and rows of one image that disagree', () => {
    expect(() => bagsFromRows({ ...rows, sampleShape: undefined })).toThrow(/sampleShape: .*feature vectors/);
    expect(() => bagsFromRows({ ...rows, imageOf: Int32Array.from([0, 0, 2, 2, 0, 2]) })).toThrow('image 1 has no tile row');
    expect(() => bagsFromRows({ ...rows, imageOf: Int32Array.from([0, 0, -1, 2, 0, 1]) })).toThrow('imageOf[2]');
    expect(() => bagsFromRows({ ...rows, labels: Int32Array.from([1, 0, 0, 1, 0, 1]) })).toThrow(/labels\[2\]: row 2 of image 1/);
    expect(() => bagsFromRows({ ...rows, groups: ['p2', 'p1', 'p2', 'p3', 'p9', 'p2'] }, 'train')).toThrow('train.groups[4]');
    expect(() => bagsFromRows({ ...rows, images: new Float32Array(5) })).toThrow('data.images');
  });
});

describe('bagBatch', () => {
  it('copies the chosen bags, trimmed to the largest of them', () => {
    const bags = bagsFromRows(rows);
    const batch = bagBatch(bags, 1, 3, Int32Array.from([1, 2, 0]));
    expect(Array.from(batch.indices)).toEqual([2, 0]);
    expect(batch.tiles).toBe(2);
    expect(Array.from(batch.mask)).toEqual([1, 0, 1, 1]);
    expect(Array.from(batch.features)).toEqual([4, -4, 0, 0, 2, -2, 5, -5]);
    const all = bagBatch(bags, 0, 3);
    expect(all.tiles).toBe(3);
    expect(all.features).toEqual(bags.features);
  });
});
