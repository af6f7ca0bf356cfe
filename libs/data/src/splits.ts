import { STAGE1_CLASSES, ValidationError } from '@histofed/fl-core';
import { BREAKHIS_SUBTYPES, type BreakHisLabel, type BreakHisSubtypeCode } from './breakhis-names';
import type { BreakHisImage } from './breakhis-reader';
import { DataError } from './data-error';
import { hashSeed, mulberry32, seededShuffle } from './prng';

/**
 * Patient-wise (in fact case-wise) splits. The unit that is dealt out is always a case (the slide
 * code without trailing letters, `caseId`), so every image of one case -- all its slides, subtypes
 * and magnifications -- lands on the same side. Images are never split individually.
 *
 * Results do not depend on the order of the input images: cases are sorted before the seeded
 * shuffle, and every output list keeps the input order of its images.
 */

/** All images of one case (slide code without trailing letters), the unit every split deals out. */
export interface CaseGroup {
  readonly caseId: string;
  /** The label of most of its images (ties: malignant). */
  readonly label: BreakHisLabel;
  /**
   * The subtype of most of its images of that label (ties: the first in BREAKHIS_SUBTYPES order).
   * A case filed under two subtypes (slide 14-13412 under ductal and lobular carcinoma) is still one
   * case, counted under one subtype for stratification.
   */
  readonly subtype: BreakHisSubtypeCode;
  /** Its images, in input order. */
  readonly images: BreakHisImage[];
}

/** Groups images by caseId, sorted by caseId (code-unit order). */
export function groupByCase(images: readonly BreakHisImage[]): CaseGroup[] {
  const byCase = new Map<string, BreakHisImage[]>();
  for (const image of images) {
    const list = byCase.get(image.caseId);
    if (list) list.push(image);
    else byCase.set(image.caseId, [image]);
  }
  const groups: CaseGroup[] = [];
  for (const [caseId, list] of byCase) {
    const malignant = list.filter((i) => i.label === 'malignant').length;
    const label: BreakHisLabel = malignant * 2 >= list.length ? 'malignant' : 'benign';
    const counts = new Map<BreakHisSubtypeCode, number>();
    for (const i of list) if (i.label === label) counts.set(i.subtype, (counts.get(i.subtype) ?? 0) + 1);
    let subtype = list[0].subtype;
    let best = -1;
    for (const st of BREAKHIS_SUBTYPES) {
      const n = counts.get(st.code) ?? 0;
      if (n > best) {
        best = n;
        subtype = st.code;
      }
    }
    groups.push({ caseId, label, subtype, images: list });
  }
  return groups.sort((a, b) => (a.caseId < b.caseId ? -1 : a.caseId > b.caseId ? 1 : 0));
}

/** The cases of each label, each list shuffled with its own seeded stream. */
function shuffledByLabel(groups: readonly CaseGroup[], seed: number, purpose: string): CaseGroup[][] {
  return STAGE1_CLASSES.map((label) =>
    seededShuffle(
      groups.filter((g) => g.label === label),
      mulberry32(hashSeed(seed, purpose, label)),
    ),
  );
}

/** The images of the chosen cases, in input order. */
export function imagesOf(images: readonly BreakHisImage[], caseIds: ReadonlySet<string>): BreakHisImage[] {
  return images.filter((i) => caseIds.has(i.caseId));
}

export function checkSeed(seed: number): void {
  if (!Number.isFinite(seed)) throw new ValidationError(`seed must be a finite number, got ${seed}`);
}

/**
 * Picks `nTest` of `cases` (all of one label), stratified by subtype: each subtype gets its share
 * n_s * nTest / n of the picks, rounded by largest remainder (ties broken at random), never more
 * than it has; within a subtype the cases are taken in a seeded random order.
 */
function pickStratified(cases: readonly CaseGroup[], nTest: number, rand: () => number): CaseGroup[] {
  const n = cases.length;
  if (nTest <= 0 || n === 0) return [];
  const strata = BREAKHIS_SUBTYPES.map((st) => seededShuffle(cases.filter((g) => g.subtype === st.code), rand)).filter((s) => s.length > 0);
  const quota = strata.map((s) => (s.length * nTest) / n);
  const take = quota.map((q) => Math.floor(q));
  const tieBreak = strata.map(() => rand());
  const order = strata
    .map((_, k) => k)
    .sort((a, b) => quota[b] - take[b] - (quota[a] - take[a]) || tieBreak[a] - tieBreak[b]);
  let missing = nTest - take.reduce((a, b) => a + b, 0);
  for (let pass = 0; missing > 0 && pass < 2; pass++) {
    for (const k of order) {
      if (missing === 0) break;
      // First pass: one extra pick per subtype by largest remainder; second pass: anything left.
      if (take[k] < strata[k].length && (pass === 1 || take[k] === Math.floor(quota[k]))) {
        take[k]++;
        missing--;
      }
    }
  }
  return strata.flatMap((s, k) => s.slice(0, take[k]));
}

/**
 * Splits images into train and test by case, stratified by label and, within each label, by
 * subtype. For each label, round(n * testFraction) of its n cases go to test -- at least 1 and at
 * most n - 1 when n >= 2 and testFraction > 0 -- so both sides get both labels whenever there are
 * two or more cases of each; those test cases are spread over the label's subtypes in proportion to
 * their case counts (largest remainder), so a subtype with enough cases appears on both sides.
 * `testFraction` counts cases, not images. A case is never split: its slides (22549AB/CD/G) and a
 * slide filed under two subtypes (14-13412) stay on one side.
 */
export function patientWiseSplit(
  images: readonly BreakHisImage[],
  options: { testFraction: number; seed: number },
): { train: BreakHisImage[]; test: BreakHisImage[] } {
  const { testFraction, seed } = options;
  if (!(testFraction >= 0 && testFraction < 1)) {
    throw new ValidationError(`testFraction must be in [0, 1), got ${testFraction}`);
  }
  checkSeed(seed);
  const groups = groupByCase(images);
  const testCases = new Set<string>();
  for (const label of STAGE1_CLASSES) {
    const cases = groups.filter((g) => g.label === label);
    const n = cases.length;
    let nTest = Math.round(n * testFraction);
    if (testFraction > 0 && n >= 2) nTest = Math.min(n - 1, Math.max(1, nTest));
    const rand = mulberry32(hashSeed(seed, 'test-split', label));
    for (const g of pickStratified(cases, nTest, rand)) testCases.add(g.caseId);
  }
  return {
    train: images.filter((i) => !testCases.has(i.caseId)),
    test: imagesOf(images, testCases),
  };
}

/**
 * Simulates `sites` hospitals from one dataset: first holds out test cases exactly as
 * patientWiseSplit does (same seed gives the same test set), then deals the remaining cases IID to
 * the sites: each label's cases are shuffled (seeded) and dealt round-robin, the malignant deal
 * starting where the benign one stopped so case counts stay balanced. Every site gets both labels
 * when each label has at least `sites` training cases. Throws DataError when fewer training cases
 * than sites remain.
 */
export function simulateFederation(
  images: readonly BreakHisImage[],
  options: { sites: number; seed: number; testFraction: number },
): { test: BreakHisImage[]; sites: BreakHisImage[][] } {
  const { sites, seed, testFraction } = options;
  if (!Number.isInteger(sites) || sites < 1) throw new ValidationError(`sites must be a positive integer, got ${sites}`);
  const { train, test } = patientWiseSplit(images, { testFraction, seed });
  const groups = groupByCase(train);
  if (groups.length < sites) {
    throw new DataError(
      `Cannot simulate ${sites} sites: only ${groups.length} training case${groups.length === 1 ? '' : 's'} ` +
        `(after holding out ${testFraction} for test); every site needs at least one case`,
    );
  }
  const siteCases = Array.from({ length: sites }, () => new Set<string>());
  let next = 0;
  for (const cases of shuffledByLabel(groups, seed, 'federation')) {
    for (const g of cases) {
      siteCases[next % sites].add(g.caseId);
      next++;
    }
  }
  return { test, sites: siteCases.map((ids) => imagesOf(train, ids)) };
}

export interface PartitionSummary {
  readonly images: number;
  /** Distinct slide codes (BreakHis "patients"). */
  readonly patients: number;
  /** Distinct case numbers. */
  readonly cases: number;
  /** Images per label. */
  readonly byLabel: Readonly<Record<BreakHisLabel, number>>;
}

/** Counts per part (e.g. `[train, test]` or the sites of simulateFederation). */
export function describePartition(parts: readonly (readonly BreakHisImage[])[]): PartitionSummary[] {
  return parts.map((part) => {
    const byLabel: Record<BreakHisLabel, number> = { benign: 0, malignant: 0 };
    for (const image of part) byLabel[image.label]++;
    return {
      images: part.length,
      patients: new Set(part.map((i) => i.patientId)).size,
      cases: new Set(part.map((i) => i.caseId)).size,
      byLabel,
    };
  });
}

/** One fold of patientWiseFolds: its test cases and the training images of the other folds. */
export interface PatientWiseFold {
  /** 0-based fold index. */
  readonly fold: number;
  /** The case ids of this fold's test images, sorted. */
  readonly testCases: string[];
  /** Images of every other fold, input order. */
  readonly train: BreakHisImage[];
  /** Images of this fold's cases, input order. */
  readonly test: BreakHisImage[];
}

/**
 * k-fold cross-validation by case (patient-wise; the unit is a case as in groupByCase, so the
 * slides of 22549AB/CD/G and a slide filed under two subtypes stay in one fold), stratified by
 * label and, within a label, by subtype. Every case is in exactly one test fold.
 *
 * The cases of each label are sorted by subtype (BREAKHIS_SUBTYPES order, a seeded random order
 * within a subtype) and dealt round-robin to the folds, the malignant deal continuing where the
 * benign one stopped and the whole deal starting at a seeded fold. So each fold gets
 * floor or ceil of n_label / k cases of each label, fold sizes in cases differ by at most one,
 * and the cases of one subtype go to different folds as long as the subtype has at most k cases.
 * Image counts are not balanced (a case has 1 to 37 images in the sample). Deterministic from
 * the seed and independent of the input order. Throws DataError when there are fewer cases than
 * folds.
 */
export function patientWiseFolds(images: readonly BreakHisImage[], k: number, seed: number): PatientWiseFold[] {
  if (!Number.isInteger(k) || k < 2) throw new ValidationError(`k must be an integer >= 2, got ${k}`);
  checkSeed(seed);
  const groups = groupByCase(images);
  if (groups.length < k) {
    throw new DataError(`Cannot make ${k} folds: only ${groups.length} case${groups.length === 1 ? '' : 's'}; every fold needs at least one`);
  }
  const foldOf = new Map<string, number>();
  let next = Math.floor(mulberry32(hashSeed(seed, 'folds', 'start'))() * k);
  for (const label of STAGE1_CLASSES) {
    const cases = groups.filter((g) => g.label === label);
    const rand = mulberry32(hashSeed(seed, 'folds', label));
    const ordered = BREAKHIS_SUBTYPES.flatMap((st) => seededShuffle(cases.filter((g) => g.subtype === st.code), rand));
    for (const g of ordered) foldOf.set(g.caseId, next++ % k);
  }
  return Array.from({ length: k }, (_, fold) => {
    const testCases = groups.filter((g) => foldOf.get(g.caseId) === fold).map((g) => g.caseId);
    const ids = new Set(testCases);
    return {
      fold,
      testCases,
      train: images.filter((i) => !ids.has(i.caseId)),
      test: imagesOf(images, ids),
    };
  });
}
