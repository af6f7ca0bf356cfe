import { summarizeFusion, type FoldScore } from './summary';

const score = (table: FoldScore['table'], model: FoldScore['model'], fold: number, balancedAccuracy: number): FoldScore => ({ seed: 1, fold, table, model, balancedAccuracy, auc: null });

describe('bench:fusion summary', () => {
  it("means per table and model (the image model's folds count for both tables), and the verdicts", () => {
    const s = summarizeFusion([
      score('informative', 'image', 1, 0.6),
      score('informative', 'image', 2, 0.7),
      score('informative', 'tabular', 1, 0.7),
      score('informative', 'tabular', 2, 0.7),
      score('informative', 'fused', 1, 0.8),
      score('informative', 'fused', 2, 0.8),
      score('uninformative', 'fused', 1, 0.6),
      score('uninformative', 'fused', 2, 0.68),
    ]);
    expect(s.informative.image).toBeCloseTo(0.65, 6);
    expect(s.uninformative.image).toBeCloseTo(0.65, 6);
    expect(s.informative.fused).toBeCloseTo(0.8, 6);
    expect(s.details.informative.image.balancedAccuracy.n).toBe(2);
    expect(s.verdict.fused).toEqual({ beatsBoth: true, doesNotHurt: true });
    expect(summarizeFusion([score('informative', 'image', 1, 0.7), score('uninformative', 'fused', 1, 0.6)]).verdict.fused.doesNotHurt).toBe(false);
  });
});
