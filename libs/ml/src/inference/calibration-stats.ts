/**
 * Mergeable calibration and review statistics (issue 15): what a site reports about its validation
 * images — per confidence bin the image count, the summed confidence and the correct predictions
 * (a reliability table that sites' tables add up into, and its ECE); per predictive-entropy bin
 * the image count and the wrong predictions — and how a review threshold is read off the merged
 * entropy histogram for a target review rate. Numbers only: no image, probability or label leaves.
 */
import { ValidationError } from '@histofed/fl-core';
import { predictiveEntropy } from '../uncertainty/measures';

/** Reliability bins of the reports (the ECE of libs/ml metrics uses 10 too). */
/** One bin of a reliability table: images whose confidence falls in (lower, upper]. */
export interface ReliabilityBin {
  readonly lower: number;
  readonly upper: number;
  readonly count: number;
  /** Mean confidence (probability of the predicted class) of the bin's images, null when empty. */
  readonly confidence: number | null;
  /** Share of the bin's images whose predicted class is right, null when empty. */
  readonly accuracy: number | null;
}

export const RELIABILITY_BINS = 10;
/** Entropy bins of a review histogram: the threshold is chosen in steps of 0.01 of normalized entropy. */
export const ENTROPY_HISTOGRAM_BINS = 100;

/** The same bin edges as expectedCalibrationError: bin b holds confidences in (b/bins, (b+1)/bins]. */
const BIN_EDGE_TOLERANCE = 1e-6;

/** Per equal-width confidence bin: images, summed confidence (top probability), correct predictions. */
export interface ReliabilityCounts {
  readonly counts: number[];
  readonly confidenceSums: number[];
  readonly correct: number[];
}

/** Per normalized-entropy bin b ([b/bins, (b+1)/bins), the last one closed): images and wrong predictions. */
export interface EntropyHistogram {
  readonly counts: number[];
  readonly errors: number[];
}

function argmax(p: ArrayLike<number>, offset: number, k: number): number {
  let arg = 0;
  for (let c = 1; c < k; c++) if (p[offset + c] > p[offset + arg]) arg = c;
  return arg;
}

function checkRows(what: string, probabilities: ArrayLike<number>, labels: ArrayLike<number>, k: number, bins: number): void {
  if (!Number.isInteger(k) || k < 2) throw new ValidationError(`${what}: k must be an integer >= 2, got ${k}`);
  if (!Number.isInteger(bins) || bins < 1) throw new ValidationError(`${what}: bins must be an integer >= 1, got ${bins}`);
  if (probabilities.length !== labels.length * k) throw new ValidationError(`${what}: ${probabilities.length} values for ${labels.length} rows of ${k}`);
}

/** The reliability counts of `k`-class probability rows against `labels` (rows with a negative label are skipped). */
export function reliabilityCounts(probabilities: ArrayLike<number>, labels: ArrayLike<number>, k: number, bins = RELIABILITY_BINS): ReliabilityCounts {
  checkRows('reliabilityCounts', probabilities, labels, k, bins);
  const counts = new Array<number>(bins).fill(0);
  const confidenceSums = new Array<number>(bins).fill(0);
  const correct = new Array<number>(bins).fill(0);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] < 0) continue;
    const arg = argmax(probabilities, i * k, k);
    const p = probabilities[i * k + arg];
    const b = Math.min(bins - 1, Math.max(0, Math.ceil(p * bins - BIN_EDGE_TOLERANCE) - 1));
    counts[b]++;
    confidenceSums[b] += p;
    if (arg === labels[i]) correct[b]++;
  }
  return { counts, confidenceSums, correct };
}

/** Bin-wise sums of several parties' counts (same number of bins). */
export function mergeReliabilityCounts(parts: readonly ReliabilityCounts[]): ReliabilityCounts {
  if (parts.length === 0) throw new ValidationError('mergeReliabilityCounts: nothing to merge');
  const bins = parts[0].counts.length;
  for (const [i, p] of parts.entries()) {
    if (p.counts.length !== bins || p.confidenceSums.length !== bins || p.correct.length !== bins) {
      throw new ValidationError(`mergeReliabilityCounts: part ${i} does not have ${bins} bins`);
    }
  }
  const add = (pick: (p: ReliabilityCounts) => readonly number[]) => Array.from({ length: bins }, (_, b) => parts.reduce((s, p) => s + pick(p)[b], 0));
  return { counts: add((p) => p.counts), confidenceSums: add((p) => p.confidenceSums), correct: add((p) => p.correct) };
}

/** Expected calibration error of the counts: sum over bins of |correct - summed confidence| / images; null without images. */
export function eceOfCounts(c: ReliabilityCounts): number | null {
  const n = c.counts.reduce((a, b) => a + b, 0);
  if (n === 0) return null;
  let ece = 0;
  for (let b = 0; b < c.counts.length; b++) ece += Math.abs(c.correct[b] - c.confidenceSums[b]) / n;
  return ece;
}

/** The counts as a reliability table (mean confidence and accuracy per bin, null when empty). */
export function reliabilityTableOfCounts(c: ReliabilityCounts): ReliabilityBin[] {
  const bins = c.counts.length;
  return c.counts.map((n, b) => ({
    lower: b / bins,
    upper: (b + 1) / bins,
    count: n,
    confidence: n > 0 ? c.confidenceSums[b] / n : null,
    accuracy: n > 0 ? c.correct[b] / n : null,
  }));
}

/**
 * The histogram of the normalized predictive entropy (uncertainty/measures predictiveEntropy) of
 * `k`-class probability rows, with the wrong predictions per bin (rows with a negative label skipped).
 */
export function entropyHistogram(probabilities: ArrayLike<number>, labels: ArrayLike<number>, k: number, bins = ENTROPY_HISTOGRAM_BINS): EntropyHistogram {
  checkRows('entropyHistogram', probabilities, labels, k, bins);
  const counts = new Array<number>(bins).fill(0);
  const errors = new Array<number>(bins).fill(0);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] < 0) continue;
    const h = predictiveEntropy(probabilities, k, i * k);
    const b = Math.min(bins - 1, Math.floor(h * bins));
    counts[b]++;
    if (argmax(probabilities, i * k, k) !== labels[i]) errors[b]++;
  }
  return { counts, errors };
}

/** Bin-wise sums of several parties' entropy histograms (same number of bins). */
export function mergeEntropyHistograms(parts: readonly EntropyHistogram[]): EntropyHistogram {
  if (parts.length === 0) throw new ValidationError('mergeEntropyHistograms: nothing to merge');
  const bins = parts[0].counts.length;
  for (const [i, p] of parts.entries()) {
    if (p.counts.length !== bins || p.errors.length !== bins) throw new ValidationError(`mergeEntropyHistograms: part ${i} does not have ${bins} bins`);
  }
  return {
    counts: Array.from({ length: bins }, (_, b) => parts.reduce((s, p) => s + p.counts[b], 0)),
    errors: Array.from({ length: bins }, (_, b) => parts.reduce((s, p) => s + p.errors[b], 0)),
  };
}

/** A review threshold read off an entropy histogram, with what it does on the histogram's images. */
export interface ReviewThresholdChoice {
  /** An image is flagged when its entropy is >= threshold (a bin edge b / bins, or just above 1: none). */
  readonly threshold: number;
  readonly images: number;
  readonly flagged: number;
  /** flagged / images: the review rate the threshold achieves (the bins' width limits how close it gets). */
  readonly reviewRate: number;
  /** Accuracy of all images, and of the images not flagged (null when every image is flagged). */
  readonly accuracyAll: number;
  readonly accuracyUnflagged: number | null;
}

/**
 * The bin edge b / bins (b = 0..bins-1) whose flagged share (images in bins >= b) is closest to
 * `rate`; on a tie the higher edge (fewer images flagged: the review budget is a ceiling). Flagging
 * none gives a threshold just above 1, above every entropy (finite, so a manifest can store it).
 * Null for an empty histogram.
 */
export function reviewThresholdFor(h: EntropyHistogram, rate: number): ReviewThresholdChoice | null {
  if (!(rate >= 0 && rate <= 1)) throw new ValidationError(`reviewThresholdFor: the review rate must be in [0, 1], got ${rate}`);
  const bins = h.counts.length;
  const images = h.counts.reduce((a, b) => a + b, 0);
  if (images === 0) return null;
  const errors = h.errors.reduce((a, b) => a + b, 0);
  // flaggedFrom[b]: images in bins b..bins-1 (flaggedFrom[bins] = 0).
  const flaggedFrom = new Array<number>(bins + 1).fill(0);
  const errorsFrom = new Array<number>(bins + 1).fill(0);
  for (let b = bins - 1; b >= 0; b--) {
    flaggedFrom[b] = flaggedFrom[b + 1] + h.counts[b];
    errorsFrom[b] = errorsFrom[b + 1] + h.errors[b];
  }
  let best = bins;
  for (let b = bins - 1; b >= 0; b--) {
    if (Math.abs(flaggedFrom[b] / images - rate) < Math.abs(flaggedFrom[best] / images - rate) - 1e-12) best = b;
  }
  const flagged = flaggedFrom[best];
  const unflagged = images - flagged;
  return {
    threshold: best === bins ? 1 + Number.EPSILON : best / bins,
    images,
    flagged,
    reviewRate: flagged / images,
    accuracyAll: 1 - errors / images,
    accuracyUnflagged: unflagged > 0 ? 1 - (errors - errorsFrom[best]) / unflagged : null,
  };
}

/** The reliability table (equal-width confidence bins) of `k`-class probability rows against `labels`. */
export function reliabilityTable(probabilities: ArrayLike<number>, labels: ArrayLike<number>, k: number, bins = RELIABILITY_BINS): ReliabilityBin[] {
  return reliabilityTableOfCounts(reliabilityCounts(probabilities, labels, k, bins));
}
