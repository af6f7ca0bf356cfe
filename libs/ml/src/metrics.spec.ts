import { ValidationError } from '@histofed/fl-core';
import {
  classificationMetrics,
  confusionMatrix,
  ensembleProbabilities,
  patientAccuracy,
  predictedClasses,
  rocAuc,
} from './metrics';

const f32 = (rows: number[][]) => Float32Array.from(rows.flat());

describe('classificationMetrics', () => {
  // predicted: 0, 1, 1, 0, 0 (the 0.5/0.5 tie goes to class 0); correct: yes, no, yes, no, no
  const labels = Int32Array.from([0, 0, 1, 1, 1]);
  const probs = f32([
    [0.9, 0.1],
    [0.4, 0.6],
    [0.2, 0.8],
    [0.7, 0.3],
    [0.5, 0.5],
  ]);

  it('computes accuracy, loss, balanced accuracy, macro F1 and AUC by hand', () => {
    const m = classificationMetrics(labels, probs, 2);
    expect(m['samples']).toBe(5);
    expect(m['accuracy']).toBeCloseTo(2 / 5, 6);
    // -(ln .9 + ln .4 + ln .8 + ln .3 + ln .5) / 5
    expect(m['loss']).toBeCloseTo(
      -(Math.log(0.9) + Math.log(0.4) + Math.log(0.8) + Math.log(0.3) + Math.log(0.5)) / 5,
      5,
    );
    expect(m['loss']).toBeCloseTo(0.628383, 5);
    // recall class 0 = 1/2, class 1 = 1/3
    expect(m['balancedAccuracy']).toBeCloseTo((1 / 2 + 1 / 3) / 2, 6);
    // F1 class 0 = 2*1/(2+3), class 1 = 2*1/(3+2)
    expect(m['macroF1']).toBeCloseTo(0.4, 6);
    // positive scores .8 .3 .5 vs negative .1 .6: 4 of 6 pairs ordered correctly
    expect(m['auc']).toBeCloseTo(4 / 6, 6);
    expect(m).not.toHaveProperty('patientAccuracy');
  });

  it('computes patient accuracy as the mean over patients, with unequal images per patient', () => {
    // patient A has image 0 (correct): 1/1; patient B has images 1-4 (only image 2 correct): 1/4
    const m = classificationMetrics(labels, probs, 2, ['A', 'B', 'B', 'B', 'B']);
    expect(m['patientAccuracy']).toBeCloseTo((1 + 1 / 4) / 2, 6);
    expect(m['accuracy']).toBeCloseTo(0.4, 6); // image level differs
    // interleaved groups: A = image 2 (correct) -> 1; B = images 0, 1, 3, 4 (only 0 correct) -> 1/4
    expect(patientAccuracy(labels, predictedClasses(probs, 2), ['B', 'B', 'A', 'B', 'B'])).toBeCloseTo(
      (1 + 1 / 4) / 2,
      6,
    );
    // three patients with 1, 1 and 3 images: 1, 0 and 1/3
    expect(classificationMetrics(labels, probs, 2, ['p', 'q', 'r', 'r', 'r'])['patientAccuracy']).toBeCloseTo(
      (1 + 0 + 1 / 3) / 3,
      6,
    );
  });

  it('handles three classes, a class absent from the labels and no AUC', () => {
    const l = Int32Array.from([0, 1, 2, 2]);
    const p = f32([
      [0.5, 0.3, 0.2],
      [0.1, 0.1, 0.8],
      [0.2, 0.2, 0.6],
      [0.3, 0.4, 0.3],
    ]);
    // predicted 0, 2, 2, 1
    const m = classificationMetrics(l, p, 3);
    expect(m['accuracy']).toBeCloseTo(0.5, 6);
    expect(m['balancedAccuracy']).toBeCloseTo((1 + 0 + 0.5) / 3, 6);
    // F1: c0 2/(1+1)=1, c1 0/(1+1)=0, c2 2/(2+2)=0.5
    expect(m['macroF1']).toBeCloseTo(0.5, 6);
    expect(m).not.toHaveProperty('auc');

    const onlyZero = classificationMetrics(Int32Array.from([0, 0]), f32([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]), 3);
    expect(onlyZero['balancedAccuracy']).toBeCloseTo(0.5, 6); // only class 0 is present
    expect(onlyZero['accuracy']).toBeCloseTo(0.5, 6);
  });

  it('clips probabilities of 0 in the loss, as training does', () => {
    const m = classificationMetrics(Int32Array.from([1]), f32([[1, 0]]), 2);
    expect(m['loss']).toBeCloseTo(-Math.log(1e-7), 3);
  });

  it('rejects inconsistent inputs', () => {
    expect(() => classificationMetrics(labels, probs.subarray(1), 2)).toThrow(ValidationError);
    expect(() => classificationMetrics(Int32Array.from([0, 2]), f32([[1, 0], [0, 1]]), 2)).toThrow(/labels\[1\]/);
    expect(() => classificationMetrics(labels, probs, 2, ['A'])).toThrow(/groups/);
    expect(() => classificationMetrics(new Int32Array(0), new Float32Array(0), 2)).toThrow(/no samples/);
  });
});

describe('rocAuc', () => {
  it('counts ties as half and is NaN with one class', () => {
    expect(rocAuc(Int32Array.from([1, 0]), Float32Array.from([0.5, 0.5]))).toBeCloseTo(0.5, 6);
    expect(rocAuc(Int32Array.from([0, 0, 1, 1]), Float32Array.from([0.1, 0.2, 0.3, 0.4]))).toBe(1);
    expect(rocAuc(Int32Array.from([1, 1, 0, 0]), Float32Array.from([0.1, 0.2, 0.3, 0.4]))).toBe(0);
    expect(rocAuc(Int32Array.from([1, 1]), Float32Array.from([0.1, 0.2]))).toBeNaN();
  });
});

describe('confusionMatrix and predictedClasses', () => {
  it('counts [true][predicted] and breaks ties towards the lower class', () => {
    expect(Array.from(predictedClasses(f32([[0.3, 0.3, 0.3], [0, 0.2, 0.8]]), 3))).toEqual([0, 2]);
    expect(confusionMatrix(Int32Array.from([0, 1, 1]), Int32Array.from([0, 0, 1]), 2)).toEqual([
      [1, 0],
      [1, 1],
    ]);
  });
});

describe('ensembleProbabilities', () => {
  it('averages element-wise', () => {
    const out = ensembleProbabilities([Float32Array.from([0.2, 0.8]), Float32Array.from([0.6, 0.4]), Float32Array.from([1, 0])]);
    expect(out[0]).toBeCloseTo(0.6, 6);
    expect(out[1]).toBeCloseTo(0.4, 6);
  });

  it('throws on a length mismatch or an empty list', () => {
    expect(() => ensembleProbabilities([new Float32Array(4), new Float32Array(6)])).toThrow(/array 1 has 6 values/);
    expect(() => ensembleProbabilities([])).toThrow(ValidationError);
  });
});
