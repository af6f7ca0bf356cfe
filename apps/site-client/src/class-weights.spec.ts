import type { LabeledImages } from '@histofed/fl-core';
import type { RoundConfig } from '@histofed/protocol';
import { classWeightsFor } from './local-training';

const data = (labels: number[], subtypes: number[]): LabeledImages => ({
  images: new Float32Array(labels.length * 16 * 16 * 3),
  labels: Int32Array.from(labels),
  subtypes: Int32Array.from(subtypes),
  count: labels.length,
  imageSize: 16,
});

const model = { kind: 'se-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1] };

describe('class weights a round asks a site for', () => {
  it("'balanced' weights both heads by the site's own inverse frequencies; absent subtypes get 1", () => {
    // 6 images: 2 benign (subtype 0), 4 malignant (3 of subtype 2, 1 of subtype 3); subtype 1 absent.
    const w = classWeightsFor({ classWeighting: 'balanced', model } as Pick<RoundConfig, 'classWeighting' | 'model'>, data([0, 0, 1, 1, 1, 1], [0, 0, 2, 2, 2, 3]));
    expect(w.classWeights).toEqual([6 / (2 * 2), 6 / (2 * 4)]);
    // 3 subtypes present: n / (3 * n_s)
    expect(w.subtypeWeights).toEqual([6 / (3 * 2), 1, 6 / (3 * 3), 6 / (3 * 1)]);
  });

  it("'none' (and runs stored before the option existed) train on the plain cross-entropy", () => {
    expect(classWeightsFor({ classWeighting: 'none', model }, data([0, 1], [0, 2]))).toEqual({});
    expect(classWeightsFor({ model } as unknown as Pick<RoundConfig, 'classWeighting' | 'model'>, data([0, 1], [0, 2]))).toEqual({});
  });

  it('a single-stage model gets no subtype weights', () => {
    const w = classWeightsFor({ classWeighting: 'balanced', model: { ...model, subtypeParents: undefined } }, data([0, 1, 1], [0, 2, 2]));
    expect(w.classWeights).toEqual([3 / 2, 3 / 4]);
    expect(w.subtypeWeights).toBeUndefined();
  });
});
