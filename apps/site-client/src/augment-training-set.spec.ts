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

  it('adds HED stain jitter when asked: same geometry draws, different colours, still reproducible', () => {
    const data = brightDarkImages(4, 16, 5);
    const plain = augmentTrainingSet(data, 3);
    const stained = augmentTrainingSet(data, 3, 0.1);
    expect(Array.from(augmentTrainingSet(data, 3, 0.1).images)).toEqual(Array.from(stained.images));
    let diff = 0;
    for (let i = 0; i < plain.images.length; i++) diff += Math.abs(plain.images[i] - stained.images[i]);
    expect(diff / plain.images.length).toBeGreaterThan(0.001);
    expect(stained.images.every((v) => v >= 0 && v <= 1)).toBe(true);
  });
});
