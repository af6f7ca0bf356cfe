/**
 * More classification metrics as pure functions (no tfjs), in the conventions of metrics.ts:
 * `probabilities` is row-major [count x numClasses] and the prediction is the arg-max (ties go to
 * the lowest class index).
 */
import type { Metrics } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { classificationMetrics, confusionMatrix, predictedClasses } from './metrics';

function checkInputs(labels: Int32Array, probabilities: Float32Array, numClasses: number): void {
  if (!Number.isInteger(numClasses) || numClasses < 2) {
    throw new ValidationError(`numClasses: must be an integer >= 2, got ${numClasses}`);
  }
  if (probabilities.length !== labels.length * numClasses) {
    throw new ValidationError(
      `probabilities: ${labels.length} labels x ${numClasses} classes need ${labels.length * numClasses} values, got ${probabilities.length}`,
    );
  }
  checkLabels(labels, numClasses);
}

function checkLabels(labels: Int32Array, numClasses: number, what = 'labels'): void {
  for (let i = 0; i < labels.length; i++) {
    if (!(labels[i] >= 0 && labels[i] < numClasses)) {
      throw new ValidationError(`${what}[${i}]: ${labels[i]} is not a class index in [0, ${numClasses})`);
    }
  }
}

function checkGroups(groups: readonly string[], n: number, what: string): void {
  if (groups.length !== n) throw new ValidationError(`${what}: expected ${n} entries, got ${groups.length}`);
}

/**
 * Confidences within this distance of a bin edge count as on the edge: probabilities arrive as
 * float32, where 0.8 is stored as 0.80000001 and would otherwise fall into the next bin.
 */
const BIN_EDGE_TOLERANCE = 1e-6;

/**
 * Expected calibration error (Guo et al. 2017): the confidence of a prediction is its top
 * probability; bin m of `bins` equal-width bins holds the confidences in ((m-1)/bins, m/bins] (the
 * first bin also holds 0); ECE = sum over bins of |bin| / n * |accuracy(bin) - mean confidence(bin)|.
 */
export function expectedCalibrationError(
  labels: Int32Array,
  probabilities: Float32Array,
  numClasses: number,
  bins = 10,
): number {
  checkInputs(labels, probabilities, numClasses);
  if (!Number.isInteger(bins) || bins < 1) throw new ValidationError(`bins: must be an integer >= 1, got ${bins}`);
  const n = labels.length;
  if (n === 0) throw new ValidationError('labels: there are no samples to evaluate');
  const predicted = predictedClasses(probabilities, numClasses);
  const count = new Array<number>(bins).fill(0);
  const correct = new Array<number>(bins).fill(0);
  const confidence = new Array<number>(bins).fill(0);
  for (let i = 0; i < n; i++) {
    const conf = probabilities[i * numClasses + predicted[i]];
    const b = Math.min(bins - 1, Math.max(0, Math.ceil(conf * bins - BIN_EDGE_TOLERANCE) - 1));
    count[b]++;
    confidence[b] += conf;
    if (predicted[i] === labels[i]) correct[b]++;
  }
  let ece = 0;
  for (let b = 0; b < bins; b++) {
    if (count[b] > 0) ece += Math.abs(correct[b] - confidence[b]) / n; // = |B|/n * |acc - conf|
  }
  return ece;
}

export interface ClassMetrics {
  /** Images whose label is this class. */
  readonly support: number;
  /** Images predicted as this class. */
  readonly predicted: number;
  /** tp / predicted; NaN when nothing was predicted as this class. */
  readonly precision: number;
  /** tp / support; NaN when the class is absent from the labels. */
  readonly recall: number;
  /** 2 tp / (support + predicted); 0 when the class occurs on one side only, NaN when on neither. */
  readonly f1: number;
}

export interface PerClassReport {
  readonly perClass: readonly ClassMetrics[];
  /** Mean F1 over the classes present in the labels or the predictions (as classificationMetrics). */
  readonly macroF1: number;
  /** confusion[true][predicted] counts. */
  readonly confusion: number[][];
}

/** Per-class precision, recall and F1, the macro F1 and the confusion matrix of `predicted`. */
export function perClassMetrics(labels: Int32Array, predicted: Int32Array, numClasses: number): PerClassReport {
  if (!Number.isInteger(numClasses) || numClasses < 2) {
    throw new ValidationError(`numClasses: must be an integer >= 2, got ${numClasses}`);
  }
  if (predicted.length !== labels.length) {
    throw new ValidationError(`predicted: expected ${labels.length} entries, got ${predicted.length}`);
  }
  if (labels.length === 0) throw new ValidationError('labels: there are no samples to evaluate');
  checkLabels(labels, numClasses);
  checkLabels(predicted, numClasses, 'predicted');
  const confusion = confusionMatrix(labels, predicted, numClasses);
  const perClass: ClassMetrics[] = [];
  let f1Sum = 0;
  let f1Classes = 0;
  for (let k = 0; k < numClasses; k++) {
    const tp = confusion[k][k];
    const support = confusion[k].reduce((a, b) => a + b, 0);
    const predictedK = confusion.reduce((a, row) => a + row[k], 0);
    const f1 = support + predictedK > 0 ? (2 * tp) / (support + predictedK) : NaN;
    perClass.push({
      support,
      predicted: predictedK,
      precision: predictedK > 0 ? tp / predictedK : NaN,
      recall: support > 0 ? tp / support : NaN,
      f1,
    });
    if (!Number.isNaN(f1)) {
      f1Sum += f1;
      f1Classes++;
    }
  }
  return { perClass, macroF1: f1Sum / f1Classes, confusion };
}

export interface PatientDiagnosis {
  readonly patient: string;
  readonly label: number;
  readonly predicted: number;
  readonly images: number;
}

/**
 * One diagnosis per patient: the class predicted for most of the patient's images; a tie between
 * classes goes to the one with the highest mean probability over the patient's images, then to the
 * lowest class index. Every image of a patient must carry the same label. Patients in order of
 * first appearance.
 */
export function patientDiagnoses(
  labels: Int32Array,
  probabilities: Float32Array,
  numClasses: number,
  patients: readonly string[],
): PatientDiagnosis[] {
  checkInputs(labels, probabilities, numClasses);
  checkGroups(patients, labels.length, 'patients');
  const predicted = predictedClasses(probabilities, numClasses);
  const byPatient = new Map<string, { label: number; votes: number[]; probSum: number[]; images: number }>();
  for (let i = 0; i < labels.length; i++) {
    let p = byPatient.get(patients[i]);
    if (p === undefined) {
      p = { label: labels[i], votes: new Array<number>(numClasses).fill(0), probSum: new Array<number>(numClasses).fill(0), images: 0 };
      byPatient.set(patients[i], p);
    } else if (p.label !== labels[i]) {
      throw new ValidationError(
        `labels[${i}]: patient "${patients[i]}" has images labelled ${p.label} and ${labels[i]}; a patient has one diagnosis`,
      );
    }
    p.images++;
    p.votes[predicted[i]]++;
    for (let k = 0; k < numClasses; k++) p.probSum[k] += probabilities[i * numClasses + k];
  }
  const out: PatientDiagnosis[] = [];
  for (const [patient, p] of byPatient) {
    let best = 0;
    for (let k = 1; k < numClasses; k++) {
      if (p.votes[k] > p.votes[best] || (p.votes[k] === p.votes[best] && p.probSum[k] > p.probSum[best])) best = k;
    }
    out.push({ patient, label: p.label, predicted: best, images: p.images });
  }
  return out;
}

/** Patient-level diagnosis accuracy: the share of patients whose diagnosis (patientDiagnoses) is right. */
export function patientDiagnosisAccuracy(
  labels: Int32Array,
  probabilities: Float32Array,
  numClasses: number,
  patients: readonly string[],
): number {
  const d = patientDiagnoses(labels, probabilities, numClasses, patients);
  if (d.length === 0) throw new ValidationError('labels: there are no samples to evaluate');
  return d.filter((p) => p.predicted === p.label).length / d.length;
}

/**
 * classificationMetrics plus `ece` for each group of images (e.g. per magnification), keys sorted.
 * With `patients`, each group also gets patientAccuracy and patientDiagnosisAccuracy (computed on
 * the group's images of each patient).
 */
export function metricsByGroup(
  labels: Int32Array,
  probabilities: Float32Array,
  numClasses: number,
  groupOf: readonly string[],
  patients?: readonly string[],
): Record<string, Metrics> {
  checkInputs(labels, probabilities, numClasses);
  checkGroups(groupOf, labels.length, 'groupOf');
  if (patients !== undefined) checkGroups(patients, labels.length, 'patients');
  const members = new Map<string, number[]>();
  groupOf.forEach((g, i) => {
    const list = members.get(g);
    if (list === undefined) members.set(g, [i]);
    else list.push(i);
  });
  const out: Record<string, Metrics> = {};
  for (const group of [...members.keys()].sort()) {
    const idx = members.get(group) ?? [];
    const l = Int32Array.from(idx, (i) => labels[i]);
    const p = new Float32Array(idx.length * numClasses);
    idx.forEach((i, j) => p.set(probabilities.subarray(i * numClasses, (i + 1) * numClasses), j * numClasses));
    const pat = patients === undefined ? undefined : idx.map((i) => patients[i]);
    const m = classificationMetrics(l, p, numClasses, pat);
    m['ece'] = expectedCalibrationError(l, p, numClasses);
    if (pat !== undefined) m['patientDiagnosisAccuracy'] = patientDiagnosisAccuracy(l, p, numClasses, pat);
    out[group] = m;
  }
  return out;
}

/**
 * The metrics HistoFed reports for one evaluation: classificationMetrics plus the expected
 * calibration error and, when the images' patients are known, the patient-level diagnosis
 * accuracy (one vote per patient).
 */
export function evaluationMetrics(
  labels: Int32Array,
  probabilities: Float32Array,
  numClasses: number,
  patients?: readonly string[],
): Metrics {
  const metrics: Metrics = {
    ...classificationMetrics(labels, probabilities, numClasses, patients),
    ece: expectedCalibrationError(labels, probabilities, numClasses),
  };
  // A diagnosis per patient needs one label per patient (true of BreakHis at stage 1); otherwise it is left out.
  if (patients && hasOneLabelPerPatient(labels, patients)) {
    metrics.patientDiagnosisAccuracy = patientDiagnosisAccuracy(labels, probabilities, numClasses, patients);
  }
  return metrics;
}

function hasOneLabelPerPatient(labels: Int32Array, patients: readonly string[]): boolean {
  const seen = new Map<string, number>();
  for (let i = 0; i < labels.length; i++) {
    const l = seen.get(patients[i]);
    if (l === undefined) seen.set(patients[i], labels[i]);
    else if (l !== labels[i]) return false;
  }
  return true;
}
