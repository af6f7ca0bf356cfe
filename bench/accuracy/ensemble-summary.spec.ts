import { ensembleTable, summarizeEnsemble, type FoldEnsembleScores } from './ensemble-summary';

const s = (balancedAccuracy: number, ece: number) => ({ balancedAccuracy, ece });

describe('bench:accuracy ensemble summary', () => {
  const folds: FoldEnsembleScores[] = [
    { members: { global: s(0.8, 0.1), 'site-1': s(0.7, 0.2), 'boost-1': s(0.82, 0.12) }, combiners: { mean: s(0.85, 0.05), stacking: s(0.8, 0.2) } },
    { members: { global: s(0.9, 0.1), 'site-1': s(0.9, 0.1), 'boost-1': s(0.84, 0.1), 'snapshot-2': s(1, 0) }, combiners: { mean: s(0.87, 0.07), stacking: s(0.9, 0.1) } },
  ];

  it('averages members and combiners over folds with the sample sd', () => {
    const r = summarizeEnsemble(folds);
    expect(r.members['global']).toEqual({ balancedAccuracy: { mean: 0.85, std: 0.0707, n: 2 }, ece: { mean: 0.1, std: 0, n: 2 } });
    expect(r.combiners['mean'].balancedAccuracy).toEqual({ mean: 0.86, std: 0.0141, n: 2 });
    expect(r.members['snapshot-2'].balancedAccuracy).toEqual({ mean: 1, std: 0, n: 1 });
    expect(r.default).toBe('mean');
  });

  it('picks the best member by mean balanced accuracy among members of every fold, and differences the default against it', () => {
    const r = summarizeEnsemble(folds);
    // snapshot-2 (1.0) is missing from fold 1: not eligible; global 0.85 beats boost-1 0.83 and site-1 0.8
    expect(r.bestMember.id).toBe('global');
    expect(r.bestMember.balancedAccuracy.mean).toBe(0.85);
    expect(r.defaultMinusBestMember).toEqual({ balancedAccuracy: 0.01, ece: -0.04 });
    expect(r.defaultMinusGlobal).toEqual({ balancedAccuracy: 0.01, ece: -0.04 });
    // another default
    expect(summarizeEnsemble(folds, 'stacking').defaultMinusBestMember).toEqual({ balancedAccuracy: 0, ece: 0.05 });
  });

  it('breaks ties on balanced accuracy by the lower ECE', () => {
    const r = summarizeEnsemble([{ members: { a: s(0.8, 0.2), b: s(0.8, 0.1) }, combiners: { mean: s(0.8, 0.1) } }]);
    expect(r.bestMember.id).toBe('b');
    expect(r.defaultMinusGlobal).toBeNull();
  });

  it('refuses what it cannot summarize', () => {
    expect(() => summarizeEnsemble([])).toThrow(/no folds/);
    expect(() => summarizeEnsemble(folds, 'weighted')).toThrow(/no combiner 'weighted'/);
  });

  it('prints a table naming the best member and the default', () => {
    const lines = ensembleTable(summarizeEnsemble(folds));
    expect(lines.find((l) => l.includes('<- best member'))).toMatch(/^\s+global\s+85\.0 ± 7\.1\s+10\.0 ± 0\.0/);
    expect(lines.find((l) => l.includes('<- default'))).toMatch(/^\s+mean\s+86\.0 ± 1\.4/);
    expect(lines[lines.length - 1]).toBe('  default (mean) - best member (global): balanced accuracy +1.0 points, ECE -4.0 points; - global: +1.0 / -4.0 points');
  });
});
