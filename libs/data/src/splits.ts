import { STAGE1_CLASSES, ValidationError } from '@histofed/fl-core';
import type { BreakHisLabel } from './breakhis-names';
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

interface CaseGroup {
  readonly caseId: string;
  readonly label: BreakHisLabel;
  readonly images: BreakHisImage[];
}

/** Groups images by caseId; a case's label is the label of most of its images (ties: malignant). */
function groupByCase(images: readonly BreakHisImage[]): CaseGroup[] {
  const byCase = new Map<string, BreakHisImage[]>();
  for (const image of images) {
    const list = byCase.get(image.caseId);
    if (list) list.push(image);
    else byCase.set(image.caseId, [image]);
  }
  const groups: CaseGroup[] = [];
  for (const [caseId, list] of byCase) {
    const malignant = list.filter((i) => i.label === 'malignant').length;
    groups.push({ caseId, label: malignant * 2 >= list.length ? 'malignant' : 'benign', images: list });
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
function imagesOf(images: readonly BreakHisImage[], caseIds: ReadonlySet<string>): BreakHisImage[] {
  return images.filter((i) => caseIds.has(i.caseId));
}

function checkSeed(seed: number): void {
  if (!Number.isFinite(seed)) throw new ValidationError(`seed must be a finite number, got ${seed}`);
}

/**
 * Splits images into train and test by case, stratified by label: benign and malignant cases are
 * shuffled (seeded) and split separately, each giving round(n * testFraction) cases to test --
 * at least 1 and at most n - 1 when n >= 2 and testFraction > 0 -- so both sides get both labels
 * whenever there are two or more cases of each. `testFraction` counts cases, not images.
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
  const testCases = new Set<string>();
  for (const cases of shuffledByLabel(groupByCase(images), seed, 'test-split')) {
    const n = cases.length;
    let nTest = Math.round(n * testFraction);
    if (testFraction > 0 && n >= 2) nTest = Math.min(n - 1, Math.max(1, nTest));
    for (const g of cases.slice(0, nTest)) testCases.add(g.caseId);
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
