/**
 * The evaluation report of a two-stage BreakHis classifier, as pure functions (no tfjs), built from
 * the metrics of metrics.ts and metrics-extra.ts.
 *
 * The model's output per image is one row of `numClasses + subtypeParents.length` probabilities:
 * first the stage-1 softmax over the classes (BreakHis: 0 benign, 1 malignant), then the stage-2
 * softmax over the subtypes, `subtypeParents[j]` being the class of subtype j (BreakHis:
 * [0, 0, 0, 0, 1, 1, 1, 1] for A, F, PT, TA, DC, LC, MC, PC). A single-stage model has rows of
 * `numClasses` values only and no stage-2 report.
 *
 * Stage 2 is scored on the combined (cascade) prediction: the stage-1 arg-max picks the class, then
 * the arg-max of the subtype probabilities among that class's subtypes picks the subtype (ties go to
 * the lowest index at both steps). It is compared with the true subtype over all images, so a
 * stage-1 error is always a stage-2 error.
 *
 * Every value of the report is a number, a count or `null` (never NaN), so it survives JSON.
 */
import { ValidationError } from '@histofed/fl-core';
import { classificationMetrics, patientAccuracy, predictedClasses } from './metrics';
import type { ClassMetrics } from './metrics-extra';
import { expectedCalibrationError, patientDiagnosisAccuracy, perClassMetrics } from './metrics-extra';

export interface StagedEvaluationInput {
  /** True stage-1 class per image. */
  readonly labels: Int32Array;
  /** True subtype per image; needed for stage 2 (ignored when there is no stage 2). */
  readonly subtypes?: Int32Array;
  /** n x (numClasses + subtypeParents.length), row-major. */
  readonly probabilities: Float32Array;
  readonly numClasses: number;
  /** subtypeParents[j] = stage-1 class of subtype j; absent or empty for a single-stage model. */
  readonly subtypeParents?: readonly number[];
  /** Patient id per image. */
  readonly patients?: readonly string[];
  /** Magnification per image, e.g. 40 / 100 / 200 / 400. */
  readonly magnifications?: readonly (string | number)[];
}

/** ClassMetrics with `null` where ClassMetrics has NaN. */
export interface StagedClassMetrics {
  readonly support: number;
  readonly predicted: number;
  /** tp / predicted; null when nothing was predicted as this class. */
  readonly precision: number | null;
  /** tp / support; null when the class is absent from the labels. */
  readonly recall: number | null;
  /** 2 tp / (support + predicted); 0 when the class occurs on one side only, null when on neither. */
  readonly f1: number | null;
}

export interface Stage1Report {
  readonly imageAccuracy: number;
  /** Patient-level recognition rate (patientAccuracy); null without patients. */
  readonly patientAccuracy: number | null;
  /**
   * Share of patients whose one-vote diagnosis (patientDiagnoses: majority of the image
   * predictions, a tie going to the class with the highest mean stage-1 probability over the
   * patient's images, then to the lowest class) is right; null without patients or when a patient's
   * images carry different labels.
   */
  readonly patientDiagnosisAccuracy: number | null;
  /** Mean recall over the classes present in the labels. */
  readonly balancedAccuracy: number;
  /** ROC AUC of the class-1 probability; null unless numClasses = 2 and both classes occur. */
  readonly auc: number | null;
  /** F1 of class 1 (malignant); null when class 1 occurs neither in the labels nor the predictions. */
  readonly f1: number | null;
  /** Mean F1 over the classes present in the labels or the predictions. */
  readonly macroF1: number;
  /** confusion[true][predicted]. */
  readonly confusion: number[][];
  readonly perClass: readonly StagedClassMetrics[];
}

export interface Stage2Report {
  /** Share of images whose cascade prediction is the true subtype. */
  readonly imageAccuracy: number;
  readonly patientAccuracy: number | null;
  /**
   * Share of patients whose one-vote subtype diagnosis is right. The vote is patientDiagnoses on
   * the cascade confidence matrix (see cascadeConfidences): each image votes for its cascade
   * subtype; a tie goes to the subtype whose voting images have the larger summed cascade
   * confidence, then to the lowest subtype index. Null without patients or when a patient's images
   * carry different true subtypes (BreakHis slide 14-13412 is filed under both DC and LC).
   */
  readonly patientDiagnosisAccuracy: number | null;
  /** Mean recall over the subtypes present in the labels. */
  readonly balancedAccuracy: number;
  /** Mean F1 over the subtypes present in the labels or the cascade predictions. */
  readonly macroF1: number;
  /** confusion[true subtype][cascade prediction]. */
  readonly confusion: number[][];
  readonly perClass: readonly StagedClassMetrics[];
  /**
   * Expected calibration error (10 bins) of the cascade prediction: its confidence is the
   * probability the two-stage model gives its own answer, P(class) x P(subtype | class), with the
   * stage-1 block renormalised to sum 1 and the subtype softmax renormalised over the predicted
   * class's subtypes; it is right when the cascade prediction is the true subtype.
   */
  readonly ece: number;
}

export interface StagedGroupReport {
  readonly images: number;
  /** Distinct patients, or null without patients. */
  readonly patients: number | null;
  readonly stage1: Stage1Report;
  readonly stage2?: Stage2Report;
  /** Stage-1 expected calibration error (10 bins) of the stage-1 columns. */
  readonly ece: number;
}

export interface StagedReport extends StagedGroupReport {
  /** The same report for the images of each magnification (keys in numeric order where numeric). */
  readonly byMagnification?: Readonly<Record<string, StagedGroupReport>>;
}

function checkNumClasses(numClasses: number): void {
  if (!Number.isInteger(numClasses) || numClasses < 2) {
    throw new ValidationError(`numClasses: must be an integer >= 2, got ${numClasses}`);
  }
}

/** Each parent a class index, each class with at least one subtype (so the cascade always has an answer). */
function checkSubtypeParents(subtypeParents: readonly number[], numClasses: number): void {
  const children = new Array<number>(numClasses).fill(0);
  subtypeParents.forEach((c, j) => {
    if (!(Number.isInteger(c) && c >= 0 && c < numClasses)) {
      throw new ValidationError(`subtypeParents[${j}]: ${c} is not a class index in [0, ${numClasses})`);
    }
    children[c]++;
  });
  const childless = children.indexOf(0);
  if (childless >= 0) throw new ValidationError(`subtypeParents: class ${childless} has no subtype`);
}

function checkProbabilities(probabilities: Float32Array, width: number, n?: number): number {
  if (n === undefined) {
    if (probabilities.length % width !== 0) {
      throw new ValidationError(`probabilities: ${probabilities.length} values are not rows of ${width}`);
    }
    n = probabilities.length / width;
  } else if (probabilities.length !== n * width) {
    throw new ValidationError(
      `probabilities: ${n} images x ${width} columns need ${n * width} values, got ${probabilities.length}`,
    );
  }
  for (let i = 0; i < probabilities.length; i++) {
    const p = probabilities[i];
    if (!(p >= 0 && p <= 1)) {
      throw new ValidationError(
        `probabilities[${i}]: image ${Math.floor(i / width)}, column ${i % width}: ${p} is not a probability in [0, 1]`,
      );
    }
  }
  return n;
}

/** Columns [from, from + count) of each row. */
function columns(probabilities: Float32Array, width: number, from: number, count: number): Float32Array {
  const n = probabilities.length / width;
  const out = new Float32Array(n * count);
  for (let i = 0; i < n; i++) out.set(probabilities.subarray(i * width + from, i * width + from + count), i * count);
  return out;
}

/** Cascade prediction and its confidence P(class) x P(subtype | class) for each row (inputs checked). */
function cascade(
  probabilities: Float32Array,
  numClasses: number,
  subtypeParents: readonly number[],
): { predicted: Int32Array; confidence: Float64Array } {
  const width = numClasses + subtypeParents.length;
  const stage1 = columns(probabilities, width, 0, numClasses);
  const classes = predictedClasses(stage1, numClasses);
  const n = classes.length;
  const childCount = new Array<number>(numClasses).fill(0);
  for (const c of subtypeParents) childCount[c]++;
  const predicted = new Int32Array(n);
  const confidence = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const row = i * width;
    const c = classes[i];
    let stage1Sum = 0;
    for (let k = 0; k < numClasses; k++) stage1Sum += probabilities[row + k];
    let best = -1;
    let bestP = -1;
    let classSum = 0;
    subtypeParents.forEach((parent, j) => {
      if (parent !== c) return;
      const p = probabilities[row + numClasses + j];
      classSum += p;
      if (p > bestP) {
        best = j;
        bestP = p;
      }
    });
    predicted[i] = best;
    // An all-zero block reads as uniform, so the confidence is always positive.
    const pClass = stage1Sum > 0 ? probabilities[row + c] / stage1Sum : 1 / numClasses;
    const pSubtype = classSum > 0 ? bestP / classSum : 1 / childCount[c];
    confidence[i] = pClass * pSubtype;
  }
  return { predicted, confidence };
}

/**
 * The combined subtype prediction of each row (cascade rule): the stage-1 arg-max picks the class,
 * then the arg-max of the subtype probabilities among that class's subtypes (ties to the lowest
 * index at both steps), even when a subtype of another class has a higher probability.
 */
export function cascadeSubtypePredictions(
  probabilities: Float32Array,
  numClasses: number,
  subtypeParents: readonly number[],
): Int32Array {
  checkNumClasses(numClasses);
  checkSubtypeParents(subtypeParents, numClasses);
  checkProbabilities(probabilities, numClasses + subtypeParents.length);
  return cascade(probabilities, numClasses, subtypeParents).predicted;
}

/**
 * The cascade as an n x subtypes "probability" matrix for the arg-max based metrics: row i holds
 * the cascade confidence P(class) x P(subtype | class) at the cascade subtype and 0 elsewhere, so
 * its arg-max is exactly the cascade prediction and its top value is that prediction's confidence.
 */
export function cascadeConfidences(
  probabilities: Float32Array,
  numClasses: number,
  subtypeParents: readonly number[],
): Float32Array {
  checkNumClasses(numClasses);
  checkSubtypeParents(subtypeParents, numClasses);
  checkProbabilities(probabilities, numClasses + subtypeParents.length);
  return confidenceMatrix(cascade(probabilities, numClasses, subtypeParents), subtypeParents.length);
}

function confidenceMatrix(c: { predicted: Int32Array; confidence: Float64Array }, numSubtypes: number): Float32Array {
  const out = new Float32Array(c.predicted.length * numSubtypes);
  c.predicted.forEach((j, i) => {
    out[i * numSubtypes + j] = c.confidence[i];
  });
  return out;
}

const nanToNull = (x: number | undefined): number | null => (x === undefined || Number.isNaN(x) ? null : x);

const nullable = (m: ClassMetrics): StagedClassMetrics => ({
  support: m.support,
  predicted: m.predicted,
  precision: nanToNull(m.precision),
  recall: nanToNull(m.recall),
  f1: nanToNull(m.f1),
});

/** The diagnosis accuracy, or null where patientDiagnoses refuses (a patient with two labels). */
function diagnosisOrNull(
  labels: Int32Array,
  probabilities: Float32Array,
  numClasses: number,
  patients: readonly string[] | undefined,
): number | null {
  if (patients === undefined) return null;
  try {
    return patientDiagnosisAccuracy(labels, probabilities, numClasses, patients);
  } catch (e) {
    // All other inputs were validated up front; what is left is a patient with two labels.
    if (e instanceof ValidationError) return null;
    throw e;
  }
}

/** One group of images, everything already sliced and validated. */
interface GroupData {
  readonly labels: Int32Array;
  readonly stage1: Float32Array; // n x numClasses
  readonly patients?: readonly string[];
  readonly subtypes?: Int32Array;
  readonly cascadePredicted?: Int32Array;
  readonly cascadeMatrix?: Float32Array; // n x numSubtypes, see cascadeConfidences
}

function groupReport(d: GroupData, numClasses: number, numSubtypes: number): StagedGroupReport {
  const m = classificationMetrics(d.labels, d.stage1, numClasses, d.patients);
  const pc = perClassMetrics(d.labels, predictedClasses(d.stage1, numClasses), numClasses);
  const stage1: Stage1Report = {
    imageAccuracy: m['accuracy'],
    patientAccuracy: nanToNull(m['patientAccuracy']),
    patientDiagnosisAccuracy: diagnosisOrNull(d.labels, d.stage1, numClasses, d.patients),
    balancedAccuracy: m['balancedAccuracy'],
    auc: nanToNull(m['auc']),
    f1: nanToNull(pc.perClass[1].f1),
    macroF1: pc.macroF1,
    confusion: pc.confusion,
    perClass: pc.perClass.map(nullable),
  };
  const report: StagedGroupReport = {
    images: d.labels.length,
    patients: d.patients === undefined ? null : new Set(d.patients).size,
    stage1,
    ece: expectedCalibrationError(d.labels, d.stage1, numClasses),
  };
  if (d.subtypes === undefined || d.cascadePredicted === undefined || d.cascadeMatrix === undefined) return report;

  // The cascade matrix's arg-max is the cascade prediction, so classificationMetrics scores the cascade.
  const m2 = classificationMetrics(d.subtypes, d.cascadeMatrix, numSubtypes);
  const pc2 = perClassMetrics(d.subtypes, d.cascadePredicted, numSubtypes);
  const stage2: Stage2Report = {
    imageAccuracy: m2['accuracy'],
    patientAccuracy: d.patients === undefined ? null : patientAccuracy(d.subtypes, d.cascadePredicted, d.patients),
    patientDiagnosisAccuracy: diagnosisOrNull(d.subtypes, d.cascadeMatrix, numSubtypes, d.patients),
    balancedAccuracy: m2['balancedAccuracy'],
    macroF1: pc2.macroF1,
    confusion: pc2.confusion,
    perClass: pc2.perClass.map(nullable),
    ece: expectedCalibrationError(d.subtypes, d.cascadeMatrix, numSubtypes),
  };
  return { ...report, stage2 };
}

function subset(d: GroupData, idx: readonly number[], numClasses: number, numSubtypes: number): GroupData {
  const pick = (a: Int32Array) => Int32Array.from(idx, (i) => a[i]);
  const patients = d.patients;
  const rows = (a: Float32Array, w: number) => {
    const out = new Float32Array(idx.length * w);
    idx.forEach((i, j) => out.set(a.subarray(i * w, (i + 1) * w), j * w));
    return out;
  };
  return {
    labels: pick(d.labels),
    stage1: rows(d.stage1, numClasses),
    patients: patients === undefined ? undefined : idx.map((i) => patients[i]),
    subtypes: d.subtypes === undefined ? undefined : pick(d.subtypes),
    cascadePredicted: d.cascadePredicted === undefined ? undefined : pick(d.cascadePredicted),
    cascadeMatrix: d.cascadeMatrix === undefined ? undefined : rows(d.cascadeMatrix, numSubtypes),
  };
}

const numericFirst = (a: string, b: string): number => {
  const x = Number(a);
  const y = Number(b);
  const xn = a.trim() !== '' && Number.isFinite(x);
  const yn = b.trim() !== '' && Number.isFinite(y);
  if (xn && yn) return x - y || (a < b ? -1 : a > b ? 1 : 0);
  if (xn !== yn) return xn ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
};

/**
 * The stage-1 report (from the first numClasses columns), the stage-2 report of the cascade
 * prediction (when the model has subtype columns and `subtypes` is given), and the same per
 * magnification (when `magnifications` is given). Values that are undefined on the images at hand
 * (an AUC with one class present, a diagnosis of a patient with two labels) are null.
 */
export function stagedEvaluation(input: StagedEvaluationInput): StagedReport {
  const { labels, numClasses, patients, magnifications } = input;
  const subtypeParents = input.subtypeParents ?? [];
  const numSubtypes = subtypeParents.length;
  checkNumClasses(numClasses);
  if (numSubtypes > 0) checkSubtypeParents(subtypeParents, numClasses);
  const n = labels.length;
  if (n === 0) throw new ValidationError('labels: there are no samples to evaluate');
  const width = numClasses + numSubtypes;
  checkProbabilities(input.probabilities, width, n);
  for (let i = 0; i < n; i++) {
    if (!(labels[i] >= 0 && labels[i] < numClasses)) {
      throw new ValidationError(`labels[${i}]: ${labels[i]} is not a class index in [0, ${numClasses})`);
    }
  }
  if (patients !== undefined && patients.length !== n) {
    throw new ValidationError(`patients: expected ${n} entries, got ${patients.length}`);
  }
  if (magnifications !== undefined && magnifications.length !== n) {
    throw new ValidationError(`magnifications: expected ${n} entries, got ${magnifications.length}`);
  }
  const subtypes = numSubtypes > 0 ? input.subtypes : undefined;
  if (subtypes !== undefined) {
    if (subtypes.length !== n) throw new ValidationError(`subtypes: expected ${n} entries, got ${subtypes.length}`);
    for (let i = 0; i < n; i++) {
      const s = subtypes[i];
      if (!(s >= 0 && s < numSubtypes)) {
        throw new ValidationError(`subtypes[${i}]: ${s} is not a subtype index in [0, ${numSubtypes})`);
      }
      if (subtypeParents[s] !== labels[i]) {
        throw new ValidationError(
          `subtypes[${i}]: subtype ${s} belongs to class ${subtypeParents[s]}, but labels[${i}] is ${labels[i]}`,
        );
      }
    }
  }

  let data: GroupData = { labels, stage1: columns(input.probabilities, width, 0, numClasses), patients };
  if (subtypes !== undefined) {
    const c = cascade(input.probabilities, numClasses, subtypeParents);
    data = { ...data, subtypes, cascadePredicted: c.predicted, cascadeMatrix: confidenceMatrix(c, numSubtypes) };
  }

  const report = groupReport(data, numClasses, numSubtypes);
  if (magnifications === undefined) return report;
  const members = new Map<string, number[]>();
  magnifications.forEach((mag, i) => {
    const key = String(mag);
    const list = members.get(key);
    if (list === undefined) members.set(key, [i]);
    else list.push(i);
  });
  const byMagnification: Record<string, StagedGroupReport> = {};
  for (const key of [...members.keys()].sort(numericFirst)) {
    byMagnification[key] = groupReport(subset(data, members.get(key) ?? [], numClasses, numSubtypes), numClasses, numSubtypes);
  }
  return { ...report, byMagnification };
}

/**
 * Flat named numbers for storage and dashboards (fl-core `Metrics`): accuracy, balancedAccuracy,
 * patientAccuracy, patientDiagnosisAccuracy, auc, f1, macroF1, ece (stage 1) and, with a stage-2
 * report, stage2Accuracy, stage2PatientAccuracy, stage2MacroF1, stage2BalancedAccuracy. Keys whose
 * value is null are left out.
 */
export function stagedMetricsSummary(report: StagedReport): Record<string, number> {
  const out: Record<string, number> = {};
  const put = (key: string, value: number | null): void => {
    if (value !== null) out[key] = value;
  };
  const s1 = report.stage1;
  put('accuracy', s1.imageAccuracy);
  put('balancedAccuracy', s1.balancedAccuracy);
  put('patientAccuracy', s1.patientAccuracy);
  put('patientDiagnosisAccuracy', s1.patientDiagnosisAccuracy);
  put('auc', s1.auc);
  put('f1', s1.f1);
  put('macroF1', s1.macroF1);
  put('ece', report.ece);
  const s2 = report.stage2;
  if (s2 !== undefined) {
    put('stage2Accuracy', s2.imageAccuracy);
    put('stage2PatientAccuracy', s2.patientAccuracy);
    put('stage2MacroF1', s2.macroF1);
    put('stage2BalancedAccuracy', s2.balancedAccuracy);
  }
  return out;
}
