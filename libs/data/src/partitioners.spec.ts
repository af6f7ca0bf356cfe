import { ValidationError } from '@histofed/fl-core';
import {
  BREAKHIS_MAGNIFICATIONS,
  BREAKHIS_SUBTYPES,
  breakHisCaseId,
  breakHisRelativePath,
  type BreakHisImageKey,
  type BreakHisMagnification,
} from './breakhis-names';
import { readBreakHisTree, type BreakHisImage } from './breakhis-reader';
import { DataError } from './data-error';
import { dirichletSample, logGammaSample, partitionSites, summarizePart, type PartitionKind } from './partitioners';
import { hashSeed, mulberry32, seededShuffle } from './prng';
import { simulateFederation } from './splits';
import { REAL_SAMPLE_ROOT } from './test-paths';

const paths = (xs: readonly BreakHisImage[]): string[] => xs.map((i) => i.path);
const cases = (xs: readonly BreakHisImage[]): Set<string> => new Set(xs.map((i) => i.caseId));

/** In-memory images (no files): `perSubtype` cases per subtype, one slide each, images at every magnification. */
function fakeImages(perSubtype: number, imagesPerMag = 2): BreakHisImage[] {
  const out: BreakHisImage[] = [];
  BREAKHIS_SUBTYPES.forEach((st, s) => {
    for (let p = 0; p < perSubtype; p++) {
      const patientId = `14-${1000 + s * 100 + p}`;
      for (const magnification of BREAKHIS_MAGNIFICATIONS) {
        for (let q = 1; q <= imagesPerMag; q++) {
          const key: BreakHisImageKey = { subtype: st.code, patientId, magnification, sequence: q };
          const relativePath = breakHisRelativePath(key);
          out.push({
            path: `/fake/${relativePath}`,
            relativePath,
            label: st.label,
            labelIndex: st.labelIndex,
            subtype: st.code,
            patientId,
            caseId: breakHisCaseId(patientId),
            magnification,
            sequence: q,
          });
        }
      }
    }
  });
  return out;
}

function expectDisjointAndComplete(images: readonly BreakHisImage[], test: BreakHisImage[], sites: BreakHisImage[][], complete = true): void {
  const parts = [test, ...sites];
  for (let a = 0; a < parts.length; a++) {
    for (let b = a + 1; b < parts.length; b++) {
      expect([...cases(parts[a])].filter((c) => cases(parts[b]).has(c))).toEqual([]);
    }
  }
  const all = parts.flatMap(paths);
  expect(new Set(all).size).toBe(all.length);
  if (complete) expect(all.length).toBe(images.length);
}

describe('Dirichlet sampling', () => {
  it('Gamma draws have the right mean for shapes below and above 1', () => {
    for (const shape of [0.3, 1, 2.5, 10]) {
      const rand = mulberry32(hashSeed('gamma', shape));
      let sum = 0;
      const n = 4000;
      for (let i = 0; i < n; i++) sum += Math.exp(logGammaSample(shape, rand));
      expect(sum / n).toBeGreaterThan(shape * 0.9);
      expect(sum / n).toBeLessThan(shape * 1.1);
    }
  });

  it('sums to 1; small alpha is peaked, large alpha flat; tiny alpha does not underflow', () => {
    const rand = mulberry32(3);
    for (const alpha of [0.001, 0.1, 1, 1000]) {
      const p = dirichletSample(5, alpha, rand);
      expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
      expect(p.every((x) => Number.isFinite(x) && x >= 0)).toBe(true);
    }
    const maxShare = (alpha: number): number => {
      let s = 0;
      for (let i = 0; i < 200; i++) s += Math.max(...dirichletSample(4, alpha, rand));
      return s / 200;
    };
    expect(maxShare(0.05)).toBeGreaterThan(0.85);
    expect(maxShare(1000)).toBeLessThan(0.3);
  });
});

describe('partitionSites on in-memory data', () => {
  const images = fakeImages(12); // 96 cases, 48 per label, 768 images
  const kinds: PartitionKind[] = ['iid', 'label-skew', 'magnification', 'stain'];

  it.each(kinds)('%s: deterministic, input-order independent, disjoint by case, same test set as simulateFederation', (kind) => {
    const opts = { kind, sites: 5, seed: 4, testFraction: 0.2, alpha: 0.3 };
    const a = partitionSites(images, opts);
    const b = partitionSites(seededShuffle(images, mulberry32(9)), opts);
    expect(a.sites.map((s) => new Set(paths(s)))).toEqual(b.sites.map((s) => new Set(paths(s))));
    expect(a.summary).toEqual(b.summary);
    expect(paths(a.test)).toEqual(paths(simulateFederation(images, { sites: 5, seed: 4, testFraction: 0.2 }).test));
    expectDisjointAndComplete(images, a.test, a.sites, kind !== 'magnification');
    expect(a.sites.every((s) => s.length > 0)).toBe(true);
    expect(a.summary.sites.map((s) => s.images)).toEqual(a.sites.map((s) => s.length));
    expect(a.summary.test).toEqual(summarizePart(a.test));
    expect(JSON.parse(JSON.stringify(a.summary))).toEqual(a.summary);
    const other = partitionSites(images, { ...opts, seed: 5 });
    expect(other.sites.map(paths)).not.toEqual(a.sites.map(paths));
  });

  it('iid equals simulateFederation', () => {
    const p = partitionSites(images, { kind: 'iid', sites: 3, seed: 2, testFraction: 0.25 });
    const f = simulateFederation(images, { sites: 3, seed: 2, testFraction: 0.25 });
    expect(p.sites.map(paths)).toEqual(f.sites.map(paths));
    expect(p.summary.unused).toEqual({ images: 0, cases: 0 });
    expect(p.stainShifts).toBeUndefined();
  });

  it('label skew: small alpha gives skewed class counts, large alpha near-IID', () => {
    const malignantShare = (alpha: number, seed: number): number[] =>
      partitionSites(images, { kind: 'label-skew', sites: 4, seed, testFraction: 0.2, alpha }).summary.sites.map(
        (s) => s.casesByLabel.malignant / s.cases,
      );
    const spread = (xs: number[]): number => Math.max(...xs) - Math.min(...xs);
    const seeds = [1, 2, 3, 4, 5, 6];
    const skewed = seeds.map((seed) => spread(malignantShare(0.1, seed)));
    const flat = seeds.map((seed) => spread(malignantShare(1000, seed)));
    // Overall 50 % malignant. alpha 0.1: some site far from it; alpha 1000: all sites close to it.
    expect(Math.min(...skewed)).toBeGreaterThan(0.4);
    expect(Math.max(...flat)).toBeLessThan(0.15);
    const near = partitionSites(images, { kind: 'label-skew', sites: 4, seed: 1, testFraction: 0.2, alpha: 1000 });
    const counts = near.summary.sites.map((s) => s.cases);
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(2);
    expect(near.summary.alpha).toBe(1000);
  });

  it('label skew keeps every site non-empty even with a tiny alpha', () => {
    for (const seed of [1, 2, 3, 4]) {
      const p = partitionSites(images, { kind: 'label-skew', sites: 8, seed, testFraction: 0.2, alpha: 0.01 });
      expect(p.sites.every((s) => s.length > 0)).toBe(true);
      expectDisjointAndComplete(images, p.test, p.sites);
    }
  });

  it('magnification: each site holds exactly one magnification, site i gets [40,100,200,400][i mod 4]', () => {
    const p = partitionSites(images, { kind: 'magnification', sites: 6, seed: 3, testFraction: 0.2 });
    expect(p.siteMagnifications).toEqual([40, 100, 200, 400, 40, 100]);
    p.sites.forEach((site, i) => {
      expect(new Set(site.map((img) => img.magnification))).toEqual(new Set([BREAKHIS_MAGNIFICATIONS[i % 4]]));
      expect(p.summary.sites[i].magnification).toBe(BREAKHIS_MAGNIFICATIONS[i % 4]);
      expect(p.summary.sites[i].byLabel.benign).toBeGreaterThan(0);
      expect(p.summary.sites[i].byLabel.malignant).toBeGreaterThan(0);
    });
    // The other magnifications of the dealt cases are unused; every training case is used.
    const trainImages = images.length - p.test.length;
    expect(p.summary.unused.images).toBe(trainImages - p.sites.reduce((a, s) => a + s.length, 0));
    expect(p.summary.unused.cases).toBe(0);
  });

  it('stain: IID sites plus one deterministic stain shift per site', () => {
    const p = partitionSites(images, { kind: 'stain', sites: 3, seed: 8, testFraction: 0.2 });
    expect(p.sites.map(paths)).toEqual(partitionSites(images, { kind: 'iid', sites: 3, seed: 8, testFraction: 0.2 }).sites.map(paths));
    expect(p.stainShifts).toHaveLength(3);
    expect(p.stainShifts?.map((s) => s.site)).toEqual([0, 1, 2]);
    expect(partitionSites(images, { kind: 'stain', sites: 3, seed: 8, testFraction: 0.2 }).stainShifts).toEqual(p.stainShifts);
    expect(p.summary.sites[1].stainShift?.concentrationScale).toEqual(p.stainShifts?.[1].concentrationScale);
  });

  it('reports per-site subtype and magnification counts', () => {
    const p = partitionSites(images, { kind: 'iid', sites: 2, seed: 1, testFraction: 0.25 });
    for (const [i, s] of p.summary.sites.entries()) {
      expect(Object.keys(s.bySubtype)).toEqual(BREAKHIS_SUBTYPES.map((st) => st.code));
      expect(Object.values(s.bySubtype).reduce((a, b) => a + b, 0)).toBe(s.images);
      expect(Object.keys(s.byMagnification)).toEqual(['40X', '100X', '200X', '400X']);
      expect(s.byLabel.benign + s.byLabel.malignant).toBe(p.sites[i].length);
      expect(s.casesByLabel.benign + s.casesByLabel.malignant).toBe(s.cases);
    }
  });

  it('rejects bad options; too few cases is a DataError', () => {
    const base = { sites: 3, seed: 1, testFraction: 0.2 };
    expect(() => partitionSites(images, { ...base, kind: 'weird' as PartitionKind })).toThrow(ValidationError);
    expect(() => partitionSites(images, { ...base, kind: 'label-skew', alpha: 0 })).toThrow(ValidationError);
    expect(() => partitionSites(images, { ...base, kind: 'iid', sites: 0 })).toThrow(ValidationError);
    for (const kind of ['iid', 'label-skew', 'magnification'] as const) {
      expect(() => partitionSites(images, { ...base, kind, sites: 200 })).toThrow(DataError);
    }
  });
});

describe('partitionSites on the real sample', () => {
  let images: BreakHisImage[];
  beforeAll(async () => {
    images = (await readBreakHisTree(REAL_SAMPLE_ROOT)).images;
  });

  it.each(['iid', 'label-skew', 'magnification', 'stain'] as const)('%s with 3 sites', (kind) => {
    const p = partitionSites(images, { kind, sites: 3, seed: 1, testFraction: 0.25, alpha: 0.5 });
    expect(paths(p.test)).toEqual(paths(simulateFederation(images, { sites: 3, seed: 1, testFraction: 0.25 }).test));
    expectDisjointAndComplete(images, p.test, p.sites, kind !== 'magnification');
    expect(p.sites.every((s) => s.length > 0)).toBe(true);
    // Slides of one case stay at one site.
    const at = (slide: string): number => p.sites.findIndex((s) => s.some((i) => i.patientId === slide));
    const slides = ['14-22549AB', '14-22549CD', '14-22549G'].map(at).filter((i) => i >= 0);
    expect(new Set(slides).size).toBeLessThanOrEqual(1);
    if (kind === 'magnification') {
      p.sites.forEach((s, i) => expect(new Set(s.map((img) => img.magnification as BreakHisMagnification))).toEqual(new Set([BREAKHIS_MAGNIFICATIONS[i]])));
    }
  });
});
