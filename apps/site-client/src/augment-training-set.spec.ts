import { brightDarkImages } from '@histofed/ml';
import { augmentTrainingSet } from './augment-training-set';

describe('per-round augmentation of the training set', () => {
  it('is reproducible per round seed, differs between rounds, keeps labels and leaves the originals alone', () => {
    const data = brightDarkImages(6, 16, 3);
    const original = Float32Array.from(data.images);
    const a = augmentTrainingSet(data, 11);
    const b = augmentTrainingSet(data, 11);
    const c = augmentTrainingSet(data, 12);
    expect(Array.from(a.images)).toEqual(Array.from(b.images));
    expect(Array.from(a.images)).not.toEqual(Array.from(c.images));
    expect(Array.from(a.images)).not.toEqual(Array.from(original));
    expect(Array.from(data.images)).toEqual(Array.from(original));
    expect(Array.from(a.labels)).toEqual(Array.from(data.labels));
    expect(a.images.every((v) => v >= 0 && v <= 1)).toBe(true);
  });
});
