import { levelTable, pruningSchedule, summarizePruning, targetLine, updateBytes, type FoldPruning, type LevelCost } from './summary';

const cost = (filters: number[], multiplyAdds: number): LevelCost => ({
  filters,
  parameters: filters.reduce((a, b) => a + b, 0) * 10,
  multiplyAdds,
  updateBytes: 4 * filters.reduce((a, b) => a + b, 0) * 10,
  trainImagesPerSecond: 100,
  inferImagesPerSecond: null,
});

const score = (balancedAccuracy: number, auc: number | null = 0.8) => ({ balancedAccuracy, auc, rounds: 5, keptRound: 2 });

describe('bench:prune summary', () => {
  it('orders the levels by channels (full first) and never grows a block', () => {
    const s = pruningSchedule([
      { id: 'full', filters: [16, 32, 64] },
      { id: 'channels25', filters: [4, 8, 16] },
      { id: 'halfMultiplyAdds', filters: [12, 24, 44] },
      { id: 'channels50', filters: [8, 28, 32] },
    ]);
    expect(s.map((l) => l.id)).toEqual(['full', 'halfMultiplyAdds', 'channels50', 'channels25']);
    expect(s[2].filters).toEqual([8, 24, 32]); // capped by the previous level
    expect(() => pruningSchedule([{ id: 'channels50', filters: [1] }])).toThrow(/no full level/);
    expect(() => pruningSchedule([{ id: 'full', filters: [2, 2] }, { id: 'channels50', filters: [1] }])).toThrow(/1 blocks, full has 2/);
  });

  it('counts float32 update bytes', () => {
    expect(updateBytes([{ values: new Float32Array(10) }, { values: new Float32Array(3) }])).toBe(52);
  });

  const schedule = [
    { id: 'full' as const, filters: [16, 32] },
    { id: 'halfMultiplyAdds' as const, filters: [12, 20] },
    { id: 'channels50' as const, filters: [8, 16] },
  ];
  const costs = { full: cost([16, 32], 1000), halfMultiplyAdds: cost([12, 20], 480), channels50: cost([8, 16], 260) };
  const folds: FoldPruning[] = [
    { seed: 1, fold: 1, full: score(0.7), pruned: { seGate: { halfMultiplyAdds: score(0.7), channels50: score(0.6, null) }, weightNorm: { halfMultiplyAdds: score(0.66), channels50: score(0.5) } } },
    { seed: 1, fold: 2, full: score(0.8), pruned: { seGate: { halfMultiplyAdds: score(0.79), channels50: score(0.7) }, weightNorm: { halfMultiplyAdds: score(0.8), channels50: score(0.6) } } },
  ];

  it('summarizes every level per ranking: fractions, mean ± sd and the paired change to the unpruned model', () => {
    const s = summarizePruning(schedule, costs, folds);
    expect(s.folds).toBe(2);
    const se = s.rankings.seGate;
    expect(se.map((l) => l.id)).toEqual(['full', 'halfMultiplyAdds', 'channels50']);
    expect(se[0].balancedAccuracy).toEqual({ mean: 0.75, std: 0.0707, n: 2 });
    expect(se[0].balancedAccuracyChange).toEqual({ mean: 0, std: 0, n: 2 });
    expect(se[1].channelFraction).toBe(0.6667);
    expect(se[1].multiplyAddsFraction).toBe(0.48);
    expect(se[1].balancedAccuracyChange.mean).toBe(-0.005);
    expect(se[2].auc).toEqual({ mean: 0.8, std: 0, n: 1 }); // a fold without AUC (one class) is skipped
    expect(s.rankings.weightNorm[2].balancedAccuracyChange).toEqual({ mean: -0.2, std: 0, n: 2 });
  });

  it('checks the target: at half the multiply-adds within 1 point of the unpruned model', () => {
    const s = summarizePruning(schedule, costs, folds);
    expect(s.target.seGate).toEqual({ level: 'halfMultiplyAdds', multiplyAddsFraction: 0.48, balancedAccuracyChange: -0.005, met: true });
    expect(s.target.weightNorm.met).toBe(false); // -2 points
    expect(s.target.weightNorm.balancedAccuracyChange).toBe(-0.02);
    expect(targetLine(s, 'seGate')).toMatch(/at 48 % of the multiply-adds, balanced accuracy -0.5 points vs unpruned: target \(within 1 point\) MET/);
    expect(targetLine(s, 'weightNorm')).toMatch(/NOT met/);
    const lines = levelTable(s, 'seGate');
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(/^1\/2 mult-adds\s+12\/20\s+67%/);
  });

  it('needs the cost of every level', () => {
    expect(() => summarizePruning(schedule, { full: costs.full }, folds)).toThrow(/no cost of level halfMultiplyAdds/);
  });
});
