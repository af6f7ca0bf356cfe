import { ValidationError } from '@histofed/fl-core';
import { BREAKHIS_MAGNIFICATIONS, BREAKHIS_SUBTYPES, breakHisCaseId, breakHisRelativePath, type BreakHisSubtypeCode } from './breakhis-names';
import { readBreakHisTree, type BreakHisImage } from './breakhis-reader';
import { DataError } from './data-error';
import { hashSeed, mulberry32, seededShuffle } from './prng';
import { describePartition, groupByCase, patientWiseFolds, patientWiseSplit, simulateFederation } from './splits';
import { REAL_SAMPLE_ROOT } from './test-paths';

const set = <T>(xs: readonly T[]): Set<T> => new Set(xs);
const paths = (xs: readonly BreakHisImage[]): string[] => xs.map((i) => i.path);
const overlap = <T>(a: Set<T>, b: Set<T>): T[] => [...a].filter((x) => b.has(x));

describe('patient-wise splits on the real sample', () => {
  let images: BreakHisImage[];
  beforeAll(async () => {
    images = (await readBreakHisTree(REAL_SAMPLE_ROOT)).images;
    expect(images).toHaveLength(213);
  });

  it.each([1, 2, 3, 4, 5, 42])('seed %i: no patient and no case on both sides; all images used once', (seed) => {
    const { train, test } = patientWiseSplit(images, { testFraction: 0.25, seed });
    expect(train.length + test.length).toBe(images.length);
    expect(set(paths([...train, ...test])).size).toBe(images.length);
    expect(overlap(set(train.map((i) => i.patientId)), set(test.map((i) => i.patientId)))).toEqual([]);
    expect(overlap(set(train.map((i) => i.caseId)), set(test.map((i) => i.caseId)))).toEqual([]);
    // The three slides of case 14-22549 stay together.
    const side = (slide: string): string => (test.some((i) => i.patientId === slide) ? 'test' : 'train');
    expect(new Set(['14-22549AB', '14-22549CD', '14-22549G'].map(side)).size).toBe(1);
    // Both labels on both sides.
    for (const part of [train, test]) expect(set(part.map((i) => i.label))).toEqual(set(['benign', 'malignant']));
  });

  it('is deterministic and independent of input order; seeds change it', () => {
    const a = patientWiseSplit(images, { testFraction: 0.3, seed: 11 });
    const b = patientWiseSplit(images, { testFraction: 0.3, seed: 11 });
    const shuffled = seededShuffle(images, mulberry32(hashSeed('input order')));
    const c = patientWiseSplit(shuffled, { testFraction: 0.3, seed: 11 });
    expect(paths(b.test)).toEqual(paths(a.test));
    expect(set(paths(c.test))).toEqual(set(paths(a.test)));
    expect(paths(a.test)).toEqual(images.filter((i) => a.test.includes(i)).map((i) => i.path)); // input order kept
    const others = [12, 13, 14].map((seed) => paths(patientWiseSplit(images, { testFraction: 0.3, seed }).test).join());
    expect(others.some((o) => o !== paths(a.test).join())).toBe(true);
  });

  it('takes about testFraction of the cases of each label', () => {
    // 31 cases: 11 benign, 20 malignant.
    const { test } = patientWiseSplit(images, { testFraction: 0.2, seed: 5 });
    const cases = (label: string): number => set(test.filter((i) => i.label === label).map((i) => i.caseId)).size;
    expect(cases('benign')).toBe(Math.round(11 * 0.2));
    expect(cases('malignant')).toBe(Math.round(20 * 0.2));
    expect(patientWiseSplit(images, { testFraction: 0, seed: 5 }).test).toEqual([]);
  });

  it('rejects a bad testFraction', () => {
    expect(() => patientWiseSplit(images, { testFraction: 1, seed: 1 })).toThrow(ValidationError);
    expect(() => patientWiseSplit(images, { testFraction: -0.1, seed: 1 })).toThrow(ValidationError);
  });

  it('simulateFederation: disjoint sites by case, union + test = all, both labels per site, deterministic', () => {
    const fed = simulateFederation(images, { sites: 3, seed: 9, testFraction: 0.2 });
    expect(fed.sites).toHaveLength(3);
    // Same held-out test as patientWiseSplit with the same seed.
    expect(paths(fed.test)).toEqual(paths(patientWiseSplit(images, { testFraction: 0.2, seed: 9 }).test));
    const parts = [fed.test, ...fed.sites];
    const all = parts.flatMap(paths);
    expect(all).toHaveLength(images.length);
    expect(set(all)).toEqual(set(paths(images)));
    for (let a = 0; a < parts.length; a++) {
      for (let b = a + 1; b < parts.length; b++) {
        expect(overlap(set(parts[a].map((i) => i.caseId)), set(parts[b].map((i) => i.caseId)))).toEqual([]);
        expect(overlap(set(parts[a].map((i) => i.patientId)), set(parts[b].map((i) => i.patientId)))).toEqual([]);
      }
    }
    for (const site of fed.sites) expect(set(site.map((i) => i.label))).toEqual(set(['benign', 'malignant']));
    // Case counts are balanced (dealt round-robin).
    const caseCounts = fed.sites.map((s) => set(s.map((i) => i.caseId)).size);
    expect(Math.max(...caseCounts) - Math.min(...caseCounts)).toBeLessThanOrEqual(1);
    const again = simulateFederation(images, { sites: 3, seed: 9, testFraction: 0.2 });
    expect(again.sites.map(paths)).toEqual(fed.sites.map(paths));
  });

  it('simulateFederation throws DataError when there are fewer cases than sites', () => {
    expect(() => simulateFederation(images, { sites: 40, seed: 1, testFraction: 0.2 })).toThrow(DataError);
    expect(() => simulateFederation(images, { sites: 40, seed: 1, testFraction: 0.2 })).toThrow(/40 sites: only \d+ training cases/);
    expect(() => simulateFederation(images, { sites: 0, seed: 1, testFraction: 0.2 })).toThrow(ValidationError);
  });

  it('describePartition counts images, patients, cases and labels', () => {
    const [whole, none] = describePartition([images, []]);
    expect(whole).toEqual({ images: 213, patients: 37, cases: 31, byLabel: { benign: 102, malignant: 111 } });
    expect(none).toEqual({ images: 0, patients: 0, cases: 0, byLabel: { benign: 0, malignant: 0 } });
  });
});

/** An in-memory image (no file) of slide `patientId` filed under `subtype`. */
function fakeImage(subtype: BreakHisSubtypeCode, patientId: string, magnification: (typeof BREAKHIS_MAGNIFICATIONS)[number], sequence: number): BreakHisImage {
  const st = BREAKHIS_SUBTYPES.find((x) => x.code === subtype);
  if (!st) throw new Error(subtype);
  const relativePath = breakHisRelativePath({ subtype, patientId, magnification, sequence });
  return {
    path: `/fake/${relativePath}`,
    relativePath,
    label: st.label,
    labelIndex: st.labelIndex,
    subtype,
    patientId,
    caseId: breakHisCaseId(patientId),
    magnification,
    sequence,
  };
}

describe('patient-wise splits stratified by subtype', () => {
  it('on the real sample: every case on one side, several subtypes on both sides', async () => {
    const images = (await readBreakHisTree(REAL_SAMPLE_ROOT)).images;
    for (const seed of [1, 2, 3, 4, 5]) {
      const { train, test } = patientWiseSplit(images, { testFraction: 0.25, seed });
      expect(overlap(set(train.map((i) => i.caseId)), set(test.map((i) => i.caseId)))).toEqual([]);
      const both = BREAKHIS_SUBTYPES.filter((st) => train.some((i) => i.subtype === st.code) && test.some((i) => i.subtype === st.code));
      // Benign: F (5 cases), PT (2), TA (3) get a test case; malignant: DC (8), LC (3), MC (5), PC (4) do.
      // A (one case, 22549) cannot be on both sides.
      expect(both.map((st) => st.code)).toEqual(['F', 'PT', 'TA', 'DC', 'LC', 'MC', 'PC']);
    }
  });

  it('spreads the test cases over the subtypes in proportion', () => {
    const images = BREAKHIS_SUBTYPES.flatMap((st, s) =>
      Array.from({ length: 10 }, (_, p) => [fakeImage(st.code, `14-${2000 + 100 * s + p}`, 40, 1), fakeImage(st.code, `14-${2000 + 100 * s + p}`, 100, 1)]).flat(),
    );
    for (const seed of [1, 2, 3]) {
      const { test } = patientWiseSplit(images, { testFraction: 0.2, seed });
      for (const st of BREAKHIS_SUBTYPES) expect(set(test.filter((i) => i.subtype === st.code).map((i) => i.caseId)).size).toBe(2);
    }
    // Uneven subtypes: 6 DC cases, 3 LC, 1 MC, 0 PC with 4 test cases -> DC 2 or 3, LC 1 or 2, MC 0 or 1.
    const uneven = [
      ...Array.from({ length: 6 }, (_, p) => fakeImage('DC', `14-${3000 + p}`, 40, 1)),
      ...Array.from({ length: 3 }, (_, p) => fakeImage('LC', `14-${3100 + p}`, 40, 1)),
      fakeImage('MC', '14-3200', 40, 1),
    ];
    const { test } = patientWiseSplit(uneven, { testFraction: 0.4, seed: 1 });
    const n = (code: string): number => test.filter((i) => i.subtype === code).length;
    expect(n('DC') + n('LC') + n('MC')).toBe(4);
    expect(n('DC')).toBeGreaterThanOrEqual(2);
    expect(n('LC')).toBeGreaterThanOrEqual(1);
  });

  it('slide 14-13412 filed under ductal and lobular carcinoma is one case, always on one side', () => {
    const images = [
      fakeImage('DC', '14-13412', 100, 1),
      fakeImage('DC', '14-13412', 200, 1),
      fakeImage('LC', '14-13412', 100, 1),
      ...Array.from({ length: 5 }, (_, p) => fakeImage('DC', `14-${4000 + p}`, 40, 1)),
      ...Array.from({ length: 5 }, (_, p) => fakeImage('LC', `14-${4100 + p}`, 40, 1)),
      ...Array.from({ length: 4 }, (_, p) => fakeImage('A', `14-${4200 + p}`, 40, 1)),
    ];
    const group = groupByCase(images).find((g) => g.caseId === '14-13412');
    expect(group?.images).toHaveLength(3);
    expect(group?.subtype).toBe('DC');
    for (let seed = 1; seed <= 20; seed++) {
      const { train, test } = patientWiseSplit(images, { testFraction: 0.3, seed });
      const sides = new Set([...train, ...test].filter((i) => i.caseId === '14-13412').map((i) => (test.includes(i) ? 'test' : 'train')));
      expect(sides.size).toBe(1);
    }
  });
});

describe('patientWiseFolds on the real sample', () => {
  let images: BreakHisImage[];
  beforeAll(async () => {
    images = (await readBreakHisTree(REAL_SAMPLE_ROOT)).images;
  });

  it.each([1, 2, 7])('seed %i: every case in exactly one test fold; train = the other folds', (seed) => {
    const folds = patientWiseFolds(images, 5, seed);
    expect(folds.map((f) => f.fold)).toEqual([0, 1, 2, 3, 4]);
    const allCases = groupByCase(images).map((g) => g.caseId);
    const tested = folds.flatMap((f) => f.testCases);
    expect(tested.slice().sort()).toEqual(allCases.slice().sort());
    expect(set(tested).size).toBe(tested.length);
    for (const f of folds) {
      expect(f.train.length + f.test.length).toBe(images.length);
      expect(set(f.test.map((i) => i.caseId))).toEqual(set(f.testCases));
      expect(overlap(set(f.train.map((i) => i.caseId)), set(f.test.map((i) => i.caseId)))).toEqual([]);
      expect(overlap(set(f.train.map((i) => i.patientId)), set(f.test.map((i) => i.patientId)))).toEqual([]);
    }
    // Every image is in exactly one test fold.
    expect(set(paths(folds.flatMap((f) => f.test))).size).toBe(images.length);
    expect(folds.reduce((n, f) => n + f.test.length, 0)).toBe(images.length);
  });

  it('balances the labels: each fold gets floor or ceil of each label\'s cases / k, both labels', () => {
    // 31 cases: 11 benign, 20 malignant.
    for (const seed of [1, 3, 5]) {
      const folds = patientWiseFolds(images, 5, seed);
      const groups = groupByCase(images);
      const labelOf = new Map(groups.map((g) => [g.caseId, g.label]));
      for (const f of folds) {
        const benign = f.testCases.filter((c) => labelOf.get(c) === 'benign').length;
        const malignant = f.testCases.filter((c) => labelOf.get(c) === 'malignant').length;
        expect([2, 3]).toContain(benign);
        expect(malignant).toBe(4);
        expect([6, 7]).toContain(f.testCases.length);
      }
      // Subtypes with at most k cases are spread over different folds.
      for (const st of ['F', 'DC', 'MC', 'PC', 'TA']) {
        const cases = groups.filter((g) => g.subtype === st).map((g) => g.caseId);
        const foldsOf = cases.map((c) => folds.findIndex((f) => f.testCases.includes(c)));
        expect(set(foldsOf).size).toBe(Math.min(5, cases.length));
      }
    }
  });

  it('is deterministic and independent of input order; seeds change it', () => {
    const key = (seed: number, input = images): string => patientWiseFolds(input, 5, seed).map((f) => f.testCases.join('+')).join('|');
    expect(key(4)).toBe(key(4));
    expect(key(4, seededShuffle(images, mulberry32(hashSeed('fold input order'))))).toBe(key(4));
    expect([5, 6, 7].some((s) => key(s) !== key(4))).toBe(true);
    const f = patientWiseFolds(images, 5, 4)[2];
    expect(paths(f.test)).toEqual(images.filter((i) => f.test.includes(i)).map((i) => i.path)); // input order kept
  });

  it('rejects a bad k and more folds than cases', () => {
    expect(() => patientWiseFolds(images, 1, 1)).toThrow(ValidationError);
    expect(() => patientWiseFolds(images, 2.5, 1)).toThrow(ValidationError);
    expect(() => patientWiseFolds(images, 32, 1)).toThrow(DataError);
    expect(patientWiseFolds(images, 31, 1).every((f) => f.testCases.length === 1)).toBe(true);
  });
});
