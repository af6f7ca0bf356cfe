/**
 * The review rule's arithmetic (issue 15): an image is flagged for a second look when its
 * uncertainty score is >= a threshold, chosen on validation scores for a target review rate; then
 * how much more accurate the unflagged images are (selective accuracy, risk-coverage) and how well
 * the score separates wrong predictions from right ones (AUROC). Pure, no tfjs.
 */
import { ValidationError } from '@histofed/fl-core';

function checkScores(fn: string, scores: readonly number[]): void {
  if (scores.length === 0) throw new ValidationError(`${fn}: scores: there are no scores`);
  const bad = scores.findIndex((s) => !Number.isFinite(s));
  if (bad >= 0) throw new ValidationError(`${fn}: scores[${bad}] is not a finite number (${scores[bad]})`);
}

function checkRate(fn: string, name: string, rate: number): void {
  if (!(rate >= 0 && rate <= 1)) throw new ValidationError(`${fn}: ${name} must be in [0, 1], got ${rate}`);
}

function checkPaired(fn: string, scores: readonly number[], other: readonly boolean[], name: string): void {
  checkScores(fn, scores);
  if (other.length !== scores.length) throw new ValidationError(`${fn}: ${name} has ${other.length} values for ${scores.length} scores`);
}

/** A finite number just above x (so that `score >= it` is false for every score <= x). */
function justAbove(x: number): number {
  return x === 0 ? Number.MIN_VALUE : x + Math.abs(x) * Number.EPSILON;
}

/**
 * The threshold whose rule `score >= threshold` flags the share of `scores` closest to `targetRate`
 * that ties allow (equal scores are flagged together); between two equally close shares, the
 * smaller (the review budget is a ceiling). Rate 0 flags none: a finite threshold above every score,
 * so that it can be stored (reviewRuleSchema wants a finite number).
 */
export function chooseReviewThreshold(scores: readonly number[], targetRate: number): number {
  checkScores('chooseReviewThreshold', scores);
  checkRate('chooseReviewThreshold', 'targetRate', targetRate);
  const sorted = [...scores].sort((a, b) => b - a);
  const target = targetRate * sorted.length;
  let best = { threshold: justAbove(sorted[0]), flagged: 0 };
  for (let i = 0; i < sorted.length; i++) {
    // Only the last of a run of equal scores is a candidate: all of them are flagged together.
    if (i + 1 < sorted.length && sorted[i + 1] === sorted[i]) continue;
    const flagged = i + 1;
    if (Math.abs(flagged - target) < Math.abs(best.flagged - target) - 1e-9) best = { threshold: sorted[i], flagged };
  }
  return best.threshold;
}

/** What a threshold does to a set of scored predictions. */
export interface ReviewOutcome {
  readonly threshold: number;
  /** Predictions flagged for review (score >= threshold). */
  readonly flagged: number;
  /** flagged / all. */
  readonly reviewRate: number;
  /** Accuracy of the predictions not flagged; null when every one is flagged. */
  readonly accuracyUnflagged: number | null;
  readonly accuracyAll: number;
}

/** Applies `score >= threshold` (e.g. chosen on validation) to scored predictions and their correctness. */
export function reviewAtThreshold(scores: readonly number[], correct: readonly boolean[], threshold: number): ReviewOutcome {
  checkPaired('reviewAtThreshold', scores, correct, 'correct');
  if (Number.isNaN(threshold)) throw new ValidationError('reviewAtThreshold: threshold is NaN');
  let flagged = 0;
  let right = 0;
  let rightUnflagged = 0;
  scores.forEach((s, i) => {
    if (correct[i]) right++;
    if (s >= threshold) flagged++;
    else if (correct[i]) rightUnflagged++;
  });
  const n = scores.length;
  return {
    threshold,
    flagged,
    reviewRate: flagged / n,
    accuracyUnflagged: flagged < n ? rightUnflagged / (n - flagged) : null,
    accuracyAll: right / n,
  };
}

/**
 * Selective accuracy at a review rate on one set: the threshold is chosen on these same scores
 * (chooseReviewThreshold), so the realised rate is the target up to ties. To apply a threshold chosen
 * on validation data to test data, use chooseReviewThreshold then reviewAtThreshold.
 */
export function selectiveAccuracy(
  scores: readonly number[],
  correct: readonly boolean[],
  reviewRate: number,
): { accuracyUnflagged: number | null; accuracyAll: number; flagged: number } {
  checkPaired('selectiveAccuracy', scores, correct, 'correct');
  checkRate('selectiveAccuracy', 'reviewRate', reviewRate);
  const r = reviewAtThreshold(scores, correct, chooseReviewThreshold(scores, reviewRate));
  return { accuracyUnflagged: r.accuracyUnflagged, accuracyAll: r.accuracyAll, flagged: r.flagged };
}

/**
 * The AUROC of the score as a detector of wrong predictions: the probability that a wrong one
 * scores higher than a right one, ties counting one half (Mann-Whitney U / (wrong x right)). 0.5 is
 * a useless score, 1 a perfect one. Null when every prediction is right, or every one wrong.
 */
export function uncertaintyAuroc(scores: readonly number[], wrong: readonly boolean[]): number | null {
  checkPaired('uncertaintyAuroc', scores, wrong, 'wrong');
  const nWrong = wrong.filter(Boolean).length;
  const nRight = wrong.length - nWrong;
  if (nWrong === 0 || nRight === 0) return null;
  // Mid-ranks (1-based) of the scores, ascending.
  const order = scores.map((s, i) => ({ s, i })).sort((a, b) => a.s - b.s);
  let rankSumWrong = 0;
  for (let start = 0; start < order.length; ) {
    let end = start;
    while (end + 1 < order.length && order[end + 1].s === order[start].s) end++;
    const midRank = (start + end) / 2 + 1;
    for (let j = start; j <= end; j++) if (wrong[order[j].i]) rankSumWrong += midRank;
    start = end + 1;
  }
  return (rankSumWrong - (nWrong * (nWrong + 1)) / 2) / (nWrong * nRight);
}

/** One point of a risk-coverage curve. */
export interface RiskCoveragePoint extends ReviewOutcome {
  readonly targetRate: number;
  /** Share of predictions not flagged (1 - reviewRate). */
  readonly coverage: number;
  /** 1 - accuracyUnflagged; null when every prediction is flagged. */
  readonly risk: number | null;
}

/** Selective accuracy at each review rate of `rates` (thresholds chosen on these scores). */
export function riskCoverage(scores: readonly number[], correct: readonly boolean[], rates: readonly number[]): RiskCoveragePoint[] {
  checkPaired('riskCoverage', scores, correct, 'correct');
  return rates.map((rate, i) => {
    checkRate('riskCoverage', `rates[${i}]`, rate);
    const r = reviewAtThreshold(scores, correct, chooseReviewThreshold(scores, rate));
    return { ...r, targetRate: rate, coverage: 1 - r.reviewRate, risk: r.accuracyUnflagged === null ? null : 1 - r.accuracyUnflagged };
  });
}
