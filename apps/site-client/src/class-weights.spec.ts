import type { LabeledImages } from '@histofed/fl-core';
import type { RoundConfig } from '@histofed/protocol';
import { classWeightsFor, patientWeightsFor } from './local-training';

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

  it('patientWeighting gives every patient the same total weight, and the class weights then balance patients', () => {
    // Patient p1 (benign) has 4 rows, p2 (malignant) 1 row, p3 (malignant) 1 row.
    const rows = { ...data([0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 2, 3]), groups: ['p1', 'p1', 'p1', 'p1', 'p2', 'p3'] };
    expect(patientWeightsFor({ patientWeighting: false }, rows)).toBeUndefined();
    const w = patientWeightsFor({ patientWeighting: true }, rows) as Float32Array;
    // 6 rows, 3 patients: scale 2; p1's rows 2/4 each, p2's and p3's 2/1.
    expect(Array.from(w)).toEqual([0.5, 0.5, 0.5, 0.5, 2, 2]);
    // Per patient, classes are 1 benign vs 2 malignant: weighted totals 2 and 4 of 6.
    expect(classWeightsFor({ classWeighting: 'balanced', model }, rows, w).classWeights).toEqual([6 / (2 * 2), 6 / (2 * 4)]);
    expect(() => patientWeightsFor({ patientWeighting: true }, data([0, 1], [0, 2]))).toThrow(/no patient ids/);
  });
});
