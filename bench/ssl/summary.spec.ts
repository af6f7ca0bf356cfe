import { jsonResult, labelledSubsets, sslTable, summarizeSsl, targetLines, type FoldResult, type Score } from './summary';

const units = [
  ...Array.from({ length: 10 }, (_, i) => ({ id: `b${i}`, label: 0 })),
  ...Array.from({ length: 20 }, (_, i) => ({ id: `m${i}`, label: 1 })),
];

describe('bench:ssl labelled patients', () => {
  it('stratifies by class with at least one patient per class, nested across fractions, deterministic and order-free', () => {
    const s = labelledSubsets(units, [0.1, 0.25, 1], 7);
    const count = (set: Set<string>, p: string) => [...set].filter((id) => id.startsWith(p)).length;
    const ten = s.get(0.1) as Set<string>;
    const quarter = s.get(0.25) as Set<string>;
    expect([count(ten, 'b'), count(ten, 'm')]).toEqual([1, 2]); // max(1, round(0.1 x 10)), round(0.1 x 20)
    expect([count(quarter, 'b'), count(quarter, 'm')]).toEqual([3, 5]); // round(2.5) = 3, 5
    expect((s.get(1) as Set<string>).size).toBe(30);
    for (const id of ten) expect(quarter.has(id)).toBe(true);
    const again = labelledSubsets([...units].reverse(), [0.1, 0.25, 1], 7);
    expect([...(again.get(0.25) as Set<string>)].sort()).toEqual([...quarter].sort());
    const other = labelledSubsets(units, [0.25], 8).get(0.25) as Set<string>;
    expect([...other].sort()).not.toEqual([...quarter].sort());
  });

  it('keeps one patient of a class that has only one, and refuses bad input', () => {
    const s = labelledSubsets([{ id: 'b', label: 0 }, ...units.slice(10)], [0.1], 1).get(0.1) as Set<string>;
    expect(s.has('b')).toBe(true);
    expect(s.size).toBe(3);
    expect(() => labelledSubsets(units, [0], 1)).toThrow(/\(0, 1\]/);
    expect(() => labelledSubsets([...units, units[0]], [1], 1)).toThrow(/listed twice/);
  });
});

describe('bench:ssl summary', () => {
  const sc = (balancedAccuracy: number, auc: number | null = 0.7): Score => ({ balancedAccuracy, auc });
  const fold = (fold: number, a: number, b: number, c: number, probeShift: number): FoldResult => {
    const arms = (shift: number) => ({
      imagenet: { probe: sc(a + probeShift), fineTune: sc(a) },
      imagenetSsl: { probe: sc(b + probeShift), fineTune: sc(b, fold === 1 ? null : 0.9) },
      randomSsl: { probe: sc(c + probeShift), fineTune: sc(c + shift) },
    });
    return { seed: 1, fold, labelled: { '0.1': { patients: 3, images: 20 } }, scores: { '0.1': arms(0), '0.25': arms(0.05), '1': arms(0.1) } };
  };
  const folds = [fold(1, 0.6, 0.7, 0.5, -0.1), fold(2, 0.7, 0.75, 0.55, -0.1), fold(3, 0.5, 0.62, 0.45, -0.1)];

  it('averages every cell over folds (sample sd) and pairs the SSL arms with imagenet', () => {
    const s = summarizeSsl(folds);
    expect(s.folds).toBe(3);
    expect(s.cells['0.1'].imagenet?.fineTune.balancedAccuracy).toEqual({ mean: 0.6, std: 0.1, n: 3 });
    expect(s.cells['0.1'].imagenet?.probe.balancedAccuracy.mean).toBe(0.5);
    expect(s.cells['1'].randomSsl?.fineTune.balancedAccuracy.mean).toBe(0.6);
    expect(s.cells['0.1'].imagenetSsl?.fineTune.auc).toEqual({ mean: 0.9, std: 0, n: 2 }); // a fold without AUC is skipped
    // paired changes 0.1, 0.05, 0.12
    expect(s.change['0.1'].fineTune.imagenetSsl).toEqual({ mean: 0.09, std: 0.0361, n: 3 });
    expect(s.change['0.1'].fineTune.randomSsl?.mean).toBe(-0.1);
  });

  it('prints the table and the 10 % target, and builds the issue-shaped JSON', () => {
    const s = summarizeSsl(folds);
    const lines = sslTable(s);
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/imagenet probe .* imagenet fine-tune .* randomSsl fine-tune/);
    expect(lines[1]).toMatch(/^10 %\s+50\.0 ± 10\.0 \(70\.0\)\s+60\.0 ± 10\.0 \(70\.0\)/);
    const target = targetLines(s);
    expect(target.find((l) => l.includes('fine-tune: imagenetSsl'))).toMatch(/\+9\.0 ± 3\.6 points \(paired over 3 folds, standard error 2\.1\): improved/);
    expect(target.find((l) => l.includes('fine-tune: randomSsl'))).toMatch(/NOT improved/);
    const j = jsonResult(s, 123.456);
    expect(Object.keys(j)).toEqual(['labels', 'probe', 'auc', 'folds', 'seconds']);
    expect(Object.keys(j.labels).sort()).toEqual(['0.1', '0.25', '1']);
    expect(j.labels['0.1']).toEqual({ imagenet: 0.6, imagenetSsl: 0.69, randomSsl: 0.5 });
    expect(j.probe['1'].imagenet).toBe(0.5);
    expect(j.auc.fineTune['0.1'].imagenetSsl).toBe(0.9);
    expect(j.folds).toBe(3);
    expect(j.seconds).toBe(123.5);
  });
});
