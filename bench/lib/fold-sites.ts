/** The simulated sites of one benchmark fold (bench:accuracy, bench:prune). */
import { partitionSites, patientWiseSplit, type BreakHisImage } from '@histofed/data';
import { mixSeed } from '@histofed/ml';
import type { LabeledImages } from '@histofed/fl-core';
import { slice, type DecodedSet } from '../accuracy/data-slices';
import type { SiteData } from '../accuracy/regimes';

/** The fold's training patients dealt to `sites` sites (patient-wise, IID), each split patient-wise into training and validation. */
export function foldSites(train: readonly BreakHisImage[], sites: number, valFraction: number, seed: number): { train: BreakHisImage[]; validation: BreakHisImage[] }[] {
  const partition = partitionSites(train, { kind: 'iid', sites, seed, testFraction: 0 });
  return partition.sites.map((images, i) => {
    const split = patientWiseSplit(images, { testFraction: valFraction, seed: mixSeed(seed, 11 + i) });
    return { train: split.train, validation: split.test };
  });
}

/**
 * A fold's decoded data as the federated benchmarks train on it: each site's training rows (with
 * their views), validation rows (grid) and validation rows as training data; the same pooled over
 * the sites (the centralized regime); the test rows.
 */
export function foldData(
  decoded: DecodedSet,
  siteImages: readonly { train: readonly BreakHisImage[]; validation: readonly BreakHisImage[] }[],
  test: readonly BreakHisImage[],
): { sites: SiteData[]; pooled: SiteData; test: LabeledImages } {
  const of = (train: readonly BreakHisImage[], validation: readonly BreakHisImage[]): SiteData => ({
    train: slice(decoded, train, true),
    validation: slice(decoded, validation),
    validationTrain: slice(decoded, validation, true),
  });
  return {
    sites: siteImages.map((s) => of(s.train, s.validation)),
    pooled: of(siteImages.flatMap((s) => s.train), siteImages.flatMap((s) => s.validation)),
    test: slice(decoded, test),
  };
}
