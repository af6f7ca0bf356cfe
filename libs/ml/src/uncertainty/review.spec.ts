import { ValidationError } from '@histofed/fl-core';
import { chooseReviewThreshold, reviewAtThreshold, riskCoverage, selectiveAccuracy, uncertaintyAuroc } from './review';

// Ten scored predictions (higher = more uncertain), 7 right; the wrong ones are 0, 1 and 6.
const scores = [0.9, 0.8, 0.8, 0.5, 0.3, 0.2, 0.1, 0.1, 0.05, 0];
const correct = [false, false, true, true, true, true, false, true, true, true];
const wrong = correct.map((c) => !c);

describe('chooseReviewThreshold', () => {
  it('flags the share closest to the target rate that ties allow', () => {
    expect(chooseReviewThreshold(scores, 0.1)).toBe(0.9);
    // Target 2 of 10: flagging 1 (0.9) or 3 (0.9, 0.8, 0.8) is as close; the smaller wins.
    expect(chooseReviewThreshold(scores, 0.2)).toBe(0.9);
    expect(chooseReviewThreshold(scores, 0.3)).toBe(0.8);
    // Target 7.5: 6 (down to 0.2) or 8 (down to 0.1, both tied 0.1 flagged): 8 is closer.
    expect(chooseReviewThreshold(scores, 0.75)).toBe(0.1);
    expect(chooseReviewThreshold(scores, 1)).toBe(0);
  });

  it('flags none at rate 0 with a finite threshold just above the highest score', () => {
    const t = chooseReviewThreshold(scores, 0);
    expect(Number.isFinite(t)).toBe(true);
    expect(t).toBeGreaterThan(0.9);
    expect(t).toBeLessThan(0.9 + 1e-12);
    expect(scores.filter((s) => s >= t)).toHaveLength(0);
    expect(chooseReviewThreshold([0, 0], 0)).toBeGreaterThan(0);
    expect(chooseReviewThreshold([-2, -3], 0)).toBeGreaterThan(-2);
  });

  it('keeps equal scores together', () => {
    const same = [0.5, 0.5, 0.5, 0.5];
    // Target 1.2: none (distance 1.2) is closer than all four (2.8).
    expect(same.filter((s) => s >= chooseReviewThreshold(same, 0.3))).toHaveLength(0);
    // Target 2.4: all four (1.6) is closer than none (2.4).
    expect(chooseReviewThreshold(same, 0.6)).toBe(0.5);
  });

  it('refuses bad input naming it', () => {
    expect(() => chooseReviewThreshold([], 0.2)).toThrow(/scores: there are no scores/);
    expect(() => chooseReviewThreshold([0.1, NaN], 0.2)).toThrow(/scores\[1\] is not a finite number/);
    expect(() => chooseReviewThreshold([0.1], 1.5)).toThrow(/targetRate must be in \[0, 1\], got 1.5/);
    expect(() => chooseReviewThreshold([0.1], NaN)).toThrow(ValidationError);
  });
});

describe('selectiveAccuracy and reviewAtThreshold', () => {
  it('computes the accuracy of the unflagged predictions against all', () => {
    // 30 %: 0.9, 0.8, 0.8 flagged (wrong, wrong, right); 6 of the other 7 are right.
    expect(selectiveAccuracy(scores, correct, 0.3)).toEqual({ accuracyUnflagged: 6 / 7, accuracyAll: 0.7, flagged: 3 });
    expect(selectiveAccuracy(scores, correct, 0)).toEqual({ accuracyUnflagged: 0.7, accuracyAll: 0.7, flagged: 0 });
    expect(selectiveAccuracy(scores, correct, 1)).toEqual({ accuracyUnflagged: null, accuracyAll: 0.7, flagged: 10 });
  });

  it('applies a threshold chosen elsewhere and reports the realised rate', () => {
    // >= 0.25 flags 5: the unflagged 0.2, 0.1 (wrong), 0.1, 0.05, 0 are 4 of 5 right.
    expect(reviewAtThreshold(scores, correct, 0.25)).toEqual({ threshold: 0.25, flagged: 5, reviewRate: 0.5, accuracyUnflagged: 0.8, accuracyAll: 0.7 });
    expect(reviewAtThreshold(scores, correct, 2).reviewRate).toBe(0);
    expect(() => reviewAtThreshold(scores, correct.slice(1), 0.5)).toThrow(/correct has 9 values for 10 scores/);
  });

  it('traces the risk-coverage curve', () => {
    const curve = riskCoverage(scores, correct, [0, 0.3, 1]);
    expect(curve.map((p) => p.coverage)).toEqual([1, 0.7, 0]);
    expect(curve[0].risk).toBeCloseTo(0.3, 12);
    expect(curve[1].risk).toBeCloseTo(1 / 7, 12);
    expect(curve[2].risk).toBeNull();
    expect(curve[1]).toEqual(expect.objectContaining({ targetRate: 0.3, threshold: 0.8, flagged: 3 }));
    expect(() => riskCoverage(scores, correct, [0.1, -0.1])).toThrow(/rates\[1\] must be in/);
  });
});

describe('uncertaintyAuroc', () => {
  it('is the probability that a wrong prediction scores above a right one, ties one half', () => {
    // Wrong 0.9 beats all 7 right; 0.8 beats 6 and ties 1 (6.5); 0.1 beats 2 and ties 1 (2.5): 16 / 21.
    expect(uncertaintyAuroc(scores, wrong)).toBeCloseTo(16 / 21, 12);
    expect(uncertaintyAuroc([1, 0], [true, false])).toBe(1);
    expect(uncertaintyAuroc([0, 1], [true, false])).toBe(0);
    expect(uncertaintyAuroc([0.5, 0.5, 0.5], [true, false, false])).toBe(0.5);
  });

  it('is null with only right or only wrong predictions', () => {
    expect(uncertaintyAuroc([0.1, 0.2], [false, false])).toBeNull();
    expect(uncertaintyAuroc([0.1, 0.2], [true, true])).toBeNull();
    expect(() => uncertaintyAuroc([0.1], [true, false])).toThrow(/wrong has 2 values for 1 scores/);
  });
});
