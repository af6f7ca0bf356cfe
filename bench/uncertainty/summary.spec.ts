import { chooseMeasure, patientRecognition, reviewFold, summarizeSelective, targets, type MeasureFold, type SelectiveOutcome } from './summary';

describe('bench:uncertainty arithmetic', () => {
  it('averages each patient\'s share of right images, over included images only', () => {
    const correct = [true, false, true, true];
    const patients = ['a', 'a', 'b', 'c'];
    // a: 1/2, b: 1, c: 1.
    expect(patientRecognition(correct, patients)).toBeCloseTo(2.5 / 3, 12);
    // Only images 0 and 2: a 1/1, b 1/1; c has none and does not count.
    expect(patientRecognition(correct, patients, [true, false, true, false])).toBe(1);
    expect(patientRecognition(correct, patients, [false, false, false, false])).toBeNull();
  });

  it('applies the validation threshold to the test images', () => {
    const validation = { correct: [false, true, true, true, false], patients: ['v', 'v', 'w', 'w', 'w'], scores: { entropy: [0.9, 0.1, 0.5, 0.3, 0.7] } };
    const test = { correct: [false, true, true, true], patients: ['p', 'p', 'q', 'q'], scores: { entropy: [0.95, 0.2, 0.8, 0.4] } };
    const r = reviewFold(validation, test, ['entropy'], [0.2, 0.4]);
    // 20 % of 5 validation images: the top one, threshold 0.9; on test only 0.95 reaches it.
    expect(r['entropy'].selective['0.2']).toEqual({
      threshold: 0.9,
      reviewRate: 0.25,
      images: 4,
      unflagged: 3,
      unflaggedCorrect: 3,
      correct: 3,
      accuracyUnflagged: 1,
      accuracyAll: 0.75,
      patientAccuracyUnflagged: 1,
      patientAccuracyAll: 0.75,
    });
    // 40 %: threshold 0.7; on test 0.95 and 0.8 are flagged (one wrong, one right).
    expect(r['entropy'].selective['0.4']).toEqual(expect.objectContaining({ threshold: 0.7, reviewRate: 0.5, accuracyUnflagged: 1, unflagged: 2 }));
    // Both wrong validation images (0.9, 0.7) score above every right one; on test the wrong one is the highest.
    expect(r['entropy'].validationAuroc).toBe(1);
    expect(r['entropy'].auroc).toBe(1);
    expect(() => reviewFold(validation, test, ['tileDisagreement'], [0.2])).toThrow(/no tileDisagreement scores/);
  });

  it('chooses the measure with the highest validation AUROC, the earlier on ties or when none has one', () => {
    const fold = (validationAuroc: number | null): MeasureFold => ({ validationAuroc, auroc: null, selective: {} });
    expect(chooseMeasure({ entropy: fold(0.6), tileDisagreement: fold(0.7), mcDropoutMutualInformation: fold(null) }, ['entropy', 'tileDisagreement', 'mcDropoutMutualInformation'])).toBe('tileDisagreement');
    expect(chooseMeasure({ entropy: fold(0.7), tileDisagreement: fold(0.7) }, ['entropy', 'tileDisagreement'])).toBe('entropy');
    expect(chooseMeasure({ entropy: fold(null), tileDisagreement: fold(null) }, ['tileDisagreement', 'entropy'])).toBe('tileDisagreement');
  });

  it('averages over folds and pools the counts', () => {
    const o = (images: number, unflagged: number, unflaggedCorrect: number, correct: number): SelectiveOutcome => ({
      threshold: 0.5,
      reviewRate: 1 - unflagged / images,
      images,
      unflagged,
      unflaggedCorrect,
      correct,
      accuracyUnflagged: unflagged > 0 ? unflaggedCorrect / unflagged : null,
      accuracyAll: correct / images,
      patientAccuracyUnflagged: null,
      patientAccuracyAll: null,
    });
    // Fold A: 1 vs 0.75 (gain 0.25); fold B: 0.5 vs 0.5 (gain 0).
    const s = summarizeSelective([o(4, 3, 3, 3), o(6, 4, 2, 3)]);
    expect(s.accuracyUnflagged).toBe(0.75);
    expect(s.accuracyAll).toBe(0.625);
    expect(s.gain).toBe(0.125);
    expect(s.reviewRate).toBeCloseTo((0.25 + 1 / 3) / 2, 4);
    // Pooled: 5 of 7 unflagged right, 6 of 10 in all, 3 of 10 flagged.
    expect(s.pooled).toEqual({ accuracyUnflagged: 0.7143, accuracyAll: 0.6, reviewRate: 0.3 });
    expect(s.patientAccuracyAll).toBeNull();
    expect(s.folds).toBe(2);
  });

  it('checks the targets', () => {
    expect(targets(0.2, 0.1, 0.05)).toEqual({ eceHalved: true, reviewGain5Points: true });
    expect(targets(0.2, 0.11, 0.049)).toEqual({ eceHalved: false, reviewGain5Points: false });
    expect(targets(0.2, 0.05, null).reviewGain5Points).toBe(false);
  });
});
