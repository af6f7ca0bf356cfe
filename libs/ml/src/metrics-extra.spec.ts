import { ValidationError } from '@histofed/fl-core';
import { classificationMetrics } from './metrics';
import {
  expectedCalibrationError,
  metricsByGroup,
  patientDiagnosisAccuracy,
  patientDiagnoses,
  perClassMetrics,
} from './metrics-extra';

const f32 = (rows: number[][]) => Float32Array.from(rows.flat());
const i32 = (xs: number[]) => Int32Array.from(xs);

describe('expectedCalibrationError', () => {
  // confidence / correct / bin ((m-1)/10, m/10]:
  // .9 yes bin 9; .8 no bin 8 (on the edge, float32 0.8 is 0.80000001); .7 yes and .65 no bin 7; .95 yes bin 10
  const labels = i32([0, 1, 1, 0, 1]);
  const probs = f32([
    [0.9, 0.1],
    [0.8, 0.2],
    [0.3, 0.7],
    [0.35, 0.65],
    [0.05, 0.95],
  ]);

  it('matches a hand computation with 10 bins, edges belonging to the lower bin', () => {
    // 1/5*|1-.9| + 1/5*|0-.8| + 2/5*|.5-.675| + 1/5*|1-.95| = .02 + .16 + .07 + .01
    expect(expectedCalibrationError(labels, probs, 2)).toBeCloseTo(0.26, 6);
  });

  it('with one bin is |accuracy - mean confidence|', () => {
    expect(expectedCalibrationError(labels, probs, 2, 1)).toBeCloseTo(Math.abs(3 / 5 - 4 / 5), 6);
  });

  it('is 0 for a calibrated bin and 1 for confident mistakes', () => {
    const l = i32([0, 0, 0, 1]);
    const p = f32([
      [0.75, 0.25],
      [0.75, 0.25],
      [0.75, 0.25],
      [0.75, 0.25],
    ]);
    expect(expectedCalibrationError(l, p, 2)).toBeCloseTo(0, 6);
    expect(expectedCalibrationError(i32([1, 2]), f32([[1, 0, 0], [1, 0, 0]]), 3)).toBeCloseTo(1, 6);
  });

  it('validates its inputs', () => {
    expect(() => expectedCalibrationError(i32([]), new Float32Array(0), 2)).toThrow(ValidationError);
    expect(() => expectedCalibrationError(labels, probs, 2, 0)).toThrow(/bins/);
    expect(() => expectedCalibrationError(labels, probs.subarray(1), 2)).toThrow(/probabilities/);
  });
});

describe('perClassMetrics', () => {
  it('computes precision, recall and F1 per class, with an absent class and a never-predicted one', () => {
    // class 2 occurs nowhere; class 3 is never predicted
    const labels = i32([0, 0, 0, 1, 1, 3]);
    const predicted = i32([0, 0, 1, 1, 1, 0]);
    const r = perClassMetrics(labels, predicted, 4);
    expect(r.confusion).toEqual([
      [2, 1, 0, 0],
      [0, 2, 0, 0],
      [0, 0, 0, 0],
      [1, 0, 0, 0],
    ]);
    expect(r.perClass[0]).toEqual({ support: 3, predicted: 3, precision: 2 / 3, recall: 2 / 3, f1: 2 / 3 });
    expect(r.perClass[1]).toEqual({ support: 2, predicted: 3, precision: 2 / 3, recall: 1, f1: 0.8 });
    expect(r.perClass[2].support).toBe(0);
    expect(r.perClass[2].precision).toBeNaN();
    expect(r.perClass[2].recall).toBeNaN();
    expect(r.perClass[2].f1).toBeNaN();
    expect(r.perClass[3].precision).toBeNaN();
    expect(r.perClass[3].recall).toBe(0);
    expect(r.perClass[3].f1).toBe(0);
    // the absent class 2 is left out of the mean
    expect(r.macroF1).toBeCloseTo((2 / 3 + 0.8 + 0) / 3, 10);
    // same macro F1 as classificationMetrics on one-hot probabilities
    const oneHot = f32(Array.from(predicted, (k) => [0, 1, 2, 3].map((j) => (j === k ? 1 : 0))));
    expect(classificationMetrics(labels, oneHot, 4)['macroF1']).toBeCloseTo(r.macroF1, 6);
  });

  it('gives a predicted-only class precision 0 and recall NaN', () => {
    const r = perClassMetrics(i32([0, 0]), i32([0, 1]), 2);
    expect(r.perClass[1].precision).toBe(0);
    expect(r.perClass[1].recall).toBeNaN();
    expect(r.perClass[1].f1).toBe(0);
    expect(r.macroF1).toBeCloseTo((2 / 3 + 0) / 2, 10);
  });

  it('validates its inputs', () => {
    expect(() => perClassMetrics(i32([0]), i32([0, 1]), 2)).toThrow(/predicted: expected 1/);
    expect(() => perClassMetrics(i32([0]), i32([2]), 2)).toThrow(/predicted\[0\]/);
    expect(() => perClassMetrics(i32([]), i32([]), 2)).toThrow(ValidationError);
  });
});

describe('patient diagnosis', () => {
  const patients = ['A', 'A', 'B', 'B', 'C', 'C', 'C', 'D', 'D'];
  const labels = i32([0, 0, 1, 1, 1, 1, 1, 0, 0]);
  const probs = f32([
    // A: one vote each; mean probability favours 0 -> 0, right
    [0.4, 0.6],
    [0.9, 0.1],
    // B: one vote each; mean probability favours 1 -> 1, right (lowest-index tie-break would say 0)
    [0.1, 0.9],
    [0.6, 0.4],
    // C: two votes for 0 against one, though the mean probability favours 1 -> 0, wrong
    [0.1, 0.9],
    [0.55, 0.45],
    [0.55, 0.45],
    // D: votes and mean probabilities tied -> lowest index 0, right
    [0.45, 0.55],
    [0.55, 0.45],
  ]);

  it('votes per patient, breaking ties by the mean probability, then the lowest class', () => {
    expect(patientDiagnoses(labels, probs, 2, patients)).toEqual([
      { patient: 'A', label: 0, predicted: 0, images: 2 },
      { patient: 'B', label: 1, predicted: 1, images: 2 },
      { patient: 'C', label: 1, predicted: 0, images: 3 },
      { patient: 'D', label: 0, predicted: 0, images: 2 },
    ]);
    expect(patientDiagnosisAccuracy(labels, probs, 2, patients)).toBeCloseTo(3 / 4, 10);
    // differs from the recognition rate (share of each patient's images right): A 1/2, B 1/2, C 1/3, D 1/2
    expect(classificationMetrics(labels, probs, 2, patients)['patientAccuracy']).toBeCloseTo(
      (1 / 2 + 1 / 2 + 1 / 3 + 1 / 2) / 4,
      6,
    );
  });

  it('refuses a patient whose images carry different labels', () => {
    expect(() => patientDiagnosisAccuracy(i32([0, 1]), f32([[1, 0], [1, 0]]), 2, ['P', 'P'])).toThrow(
      /patient "P" has images labelled 0 and 1/,
    );
    expect(() => patientDiagnosisAccuracy(labels, probs, 2, ['A'])).toThrow(/patients: expected 9 entries, got 1/);
  });
});

describe('metricsByGroup', () => {
  it('reports the metrics of each group, keys sorted', () => {
    const labels = i32([0, 1, 1, 0, 1, 0]);
    const probs = f32([
      [0.9, 0.1],
      [0.3, 0.7],
      [0.6, 0.4],
      [0.8, 0.2],
      [0.2, 0.8],
      [0.4, 0.6],
    ]);
    const groupOf = ['40X', '40X', '40X', '100X', '100X', '100X'];
    const patients = ['p1', 'p2', 'p2', 'p1', 'p3', 'p4'];
    const byGroup = metricsByGroup(labels, probs, 2, groupOf, patients);
    expect(Object.keys(byGroup)).toEqual(['100X', '40X']);
    // 40X: right, right, wrong; 100X: right, right, wrong
    expect(byGroup['40X']['accuracy']).toBeCloseTo(2 / 3, 6);
    expect(byGroup['40X']['samples']).toBe(3);
    expect(byGroup['100X']['accuracy']).toBeCloseTo(2 / 3, 6);
    // 40X bins: .9 right (bin 9), .7 right (bin 7), .6 wrong (bin 6): (.1 + .3 + .6) / 3
    expect(byGroup['40X']['ece']).toBeCloseTo(1 / 3, 6);
    // 40X patients: p1 right; p2 one vote each, mean probability of 1 (.55) wins -> right.
    // 100X: p1, p3 right, p4 wrong
    expect(byGroup['40X']['patientDiagnosisAccuracy']).toBeCloseTo(1, 6);
    expect(byGroup['100X']['patientDiagnosisAccuracy']).toBeCloseTo(2 / 3, 6);
    expect(byGroup['40X']['patientAccuracy']).toBeCloseTo((1 + 1 / 2) / 2, 6);
    // without patients: no patient-level keys
    const plain = metricsByGroup(labels, probs, 2, groupOf);
    expect(plain['40X']).not.toHaveProperty('patientDiagnosisAccuracy');
    expect(plain['40X']['auc']).toBe(classificationMetrics(labels.subarray(0, 3), probs.subarray(0, 6), 2)['auc']);
  });

  it('validates the group list', () => {
    expect(() => metricsByGroup(i32([0]), f32([[1, 0]]), 2, [])).toThrow(/groupOf: expected 1 entries, got 0/);
  });
});
