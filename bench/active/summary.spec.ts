import { aboveAtEveryBudget, labelFractionToFullAccuracy, meanCurve, siteBudget, startPatients, targetMet } from './summary';

const curve = (pts: [number, number][]) => pts.map(([labelFraction, balancedAccuracy]) => ({ labelFraction, balancedAccuracy }));

describe('bench:active summary', () => {
  it('averages the folds point by point with the sample sd', () => {
    const m = meanCurve([curve([[0.2, 0.6], [0.3, 0.8]]), curve([[0.22, 0.7], [0.32, 0.8]])]);
    expect(m).toEqual([
      { labelFraction: 0.21, balancedAccuracy: 0.65, balancedAccuracySd: 0.0707, folds: 2 },
      { labelFraction: 0.31, balancedAccuracy: 0.8, balancedAccuracySd: 0, folds: 2 },
    ]);
    expect(meanCurve([])).toEqual([]);
    expect(() => meanCurve([curve([[0.2, 0.6]]), curve([])])).toThrow(/length/);
  });

  it('finds the smallest label fraction reaching the full-label accuracy', () => {
    const c = curve([[0.2, 0.6], [0.3, 0.81], [0.4, 0.79], [1, 0.8]]);
    expect(labelFractionToFullAccuracy(c, 0.8)).toBe(0.3);
    expect(labelFractionToFullAccuracy(c, 0.82)).toBeNull();
    expect(labelFractionToFullAccuracy(c, 0.82, 0.02)).toBe(0.3);
  });

  it('compares with random at the budgets only (not the shared start, not everything labelled)', () => {
    const random = curve([[0.2, 0.6], [0.3, 0.7], [0.4, 0.75], [1, 0.8]]);
    expect(aboveAtEveryBudget(curve([[0.2, 0.6], [0.3, 0.71], [0.4, 0.76], [1, 0.79]]), random)).toBe(true);
    expect(aboveAtEveryBudget(curve([[0.2, 0.6], [0.3, 0.71], [0.4, 0.75], [1, 0.8]]), random)).toBe(false);
    expect(() => aboveAtEveryBudget(curve([[0.2, 0.6]]), random)).toThrow(/length/);
  });

  it('states the target', () => {
    const random = curve([[0.2, 0.6], [0.4, 0.7], [0.6, 0.75], [1, 0.8]]);
    expect(targetMet(curve([[0.2, 0.6], [0.4, 0.8], [0.6, 0.8], [1, 0.8]]), random, 0.8)).toEqual({ reachesFullByHalf: true, aboveRandom: true, met: true });
    expect(targetMet(curve([[0.2, 0.6], [0.4, 0.71], [0.6, 0.8], [1, 0.8]]), random, 0.8)).toEqual({ reachesFullByHalf: false, aboveRandom: true, met: false });
  });

  it('sizes the budgets and the labelled start', () => {
    expect(siteBudget(45, 30, 0.1)).toBe(5);
    expect(siteBudget(45, 3, 0.1)).toBe(3);
    expect(siteBudget(4, 4, 0.1)).toBe(1);
    expect(startPatients(5, 0.2)).toBe(1);
    expect(startPatients(2, 0.2)).toBe(1);
    expect(startPatients(0, 0.2)).toBe(0);
    expect(startPatients(12, 0.2)).toBe(2);
  });
});
