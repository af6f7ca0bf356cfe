/**
 * Classification metrics as pure functions of labels and predicted probabilities (no tfjs).
 * `probabilities` is row-major [count x numClasses]; the prediction is the arg-max (ties go to the
 * lowest class index).
 */
import type { Metrics } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';

/** Same clipping as the training loss (losses.ts). */
const EPSILON = 1e-7;

function checkShapes(labels: Int32Array, probabilities: Float32Array, numClasses: number): void {
  if (!Number.isInteger(numClasses) || numClasses < 2) {
    throw new ValidationError(`numClasses: must be an integer >= 2, got ${numClasses}`);
  }
  if (probabilities.length !== labels.length * numClasses) {
    throw new ValidationError(
      `probabilities: ${labels.length} labels x ${numClasses} classes need ${labels.length * numClasses} values, got ${probabilities.length}`,
    );
  }
  for (let i = 0; i < labels.length; i++) {
    if (!(labels[i] >= 0 && labels[i] < numClasses)) {
      throw new ValidationError(`labels[${i}]: ${labels[i]} is not a class index in [0, ${numClasses})`);
    }
  }
}

/** Arg-max class of each row. */
export function predictedClasses(probabilities: Float32Array, numClasses: number): Int32Array {
  const n = Math.floor(probabilities.length / numClasses);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bestP = probabilities[i * numClasses];
    for (let k = 1; k < numClasses; k++) {
      const p = probabilities[i * numClasses + k];
      if (p > bestP) {
        best = k;
        bestP = p;
      }
    }
    out[i] = best;
  }
  return out;
}

/** confusion[true][predicted] counts. */
export function confusionMatrix(labels: Int32Array, predicted: Int32Array, numClasses: number): number[][] {
  const m = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  for (let i = 0; i < labels.length; i++) m[labels[i]][predicted[i]]++;
  return m;
}

/**
 * Patient-level recognition rate: the mean over patients of the share of that patient's images
 * classified correctly (each patient counts once, however many images it has).
 */
export function patientAccuracy(labels: Int32Array, predicted: Int32Array, groups: readonly string[]): number {
  if (groups.length !== labels.length) {
    throw new ValidationError(`groups: expected ${labels.length} entries, got ${groups.length}`);
  }
  const perPatient = new Map<string, { correct: number; total: number }>();
  for (let i = 0; i < labels.length; i++) {
    const g = perPatient.get(groups[i]) ?? { correct: 0, total: 0 };
    g.total++;
    if (predicted[i] === labels[i]) g.correct++;
    perPatient.set(groups[i], g);
  }
  let sum = 0;
  for (const g of perPatient.values()) sum += g.correct / g.total;
  return sum / perPatient.size;
}

/**
 * Binary ROC AUC of the scores for the positive class (Mann-Whitney U, ties count half).
 * NaN when only one class is present.
 */
export function rocAuc(labels: Int32Array, positiveScores: Float32Array, positiveClass = 1): number {
  const idx = Array.from(labels, (_, i) => i).sort((a, b) => positiveScores[a] - positiveScores[b]);
  let pos = 0;
  let rankSumPos = 0;
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && positiveScores[idx[j + 1]] === positiveScores[idx[i]]) j++;
    const avgRank = (i + j) / 2 + 1; // 1-based ranks, averaged over ties
    for (let t = i; t <= j; t++) {
      if (labels[idx[t]] === positiveClass) {
        pos++;
        rankSumPos += avgRank;
      }
    }
    i = j + 1;
  }
  const neg = labels.length - pos;
  if (pos === 0 || neg === 0) return NaN;
  return (rankSumPos - (pos * (pos + 1)) / 2) / (pos * neg);
}

/**
 * accuracy, loss (mean cross-entropy), balancedAccuracy (mean recall over the classes present),
 * macroF1 (over the classes present in labels or predictions), samples, auc (two classes, when both
 * are present) and, when `groups` is given, patientAccuracy.
 */
export function classificationMetrics(
  labels: Int32Array,
  probabilities: Float32Array,
  numClasses: number,
  groups?: readonly string[],
): Metrics {
  checkShapes(labels, probabilities, numClasses);
  const n = labels.length;
  if (n === 0) throw new ValidationError('labels: there are no samples to evaluate');
  const predicted = predictedClasses(probabilities, numClasses);

  let correct = 0;
  let loss = 0;
  for (let i = 0; i < n; i++) {
    if (predicted[i] === labels[i]) correct++;
    const p = Math.min(1 - EPSILON, Math.max(EPSILON, probabilities[i * numClasses + labels[i]]));
    loss -= Math.log(p);
  }

  const cm = confusionMatrix(labels, predicted, numClasses);
  let recallSum = 0;
  let present = 0;
  let f1Sum = 0;
  let f1Classes = 0;
  for (let k = 0; k < numClasses; k++) {
    const actual = cm[k].reduce((a, b) => a + b, 0);
    const predictedK = cm.reduce((a, row) => a + row[k], 0);
    const tp = cm[k][k];
    if (actual > 0) {
      recallSum += tp / actual;
      present++;
    }
    if (actual > 0 || predictedK > 0) {
      f1Sum += (2 * tp) / (actual + predictedK);
      f1Classes++;
    }
  }

  const metrics: Metrics = {
    samples: n,
    accuracy: correct / n,
    loss: loss / n,
    balancedAccuracy: recallSum / present,
    macroF1: f1Sum / f1Classes,
  };
  if (numClasses === 2) {
    const scores = new Float32Array(n);
    for (let i = 0; i < n; i++) scores[i] = probabilities[i * 2 + 1];
    const auc = rocAuc(labels, scores, 1);
    if (!Number.isNaN(auc)) metrics['auc'] = auc;
  }
  if (groups !== undefined) metrics['patientAccuracy'] = patientAccuracy(labels, predicted, groups);
  return metrics;
}

/** Mean of several models' probabilities (same length each). */
export function ensembleProbabilities(list: readonly Float32Array[]): Float32Array {
  if (list.length === 0) throw new ValidationError('ensembleProbabilities: no probability arrays given');
  const len = list[0].length;
  list.forEach((p, i) => {
    if (p.length !== len) {
      throw new ValidationError(`ensembleProbabilities: array ${i} has ${p.length} values, array 0 has ${len}`);
    }
  });
  const out = new Float32Array(len);
  for (const p of list) for (let j = 0; j < len; j++) out[j] += p[j];
  for (let j = 0; j < len; j++) out[j] /= list.length;
  return out;
}
