/** The simulated sites of one benchmark fold (bench:accuracy, bench:prune). */
import { partitionSites, patientWiseSplit, type BreakHisImage } from '@histofed/data';
import { mixSeed } from '@histofed/ml';

/** The fold's training patients dealt to `sites` sites (patient-wise, IID), each split patient-wise into training and validation. */
export function foldSites(train: readonly BreakHisImage[], sites: number, valFraction: number, seed: number): { train: BreakHisImage[]; validation: BreakHisImage[] }[] {
  const partition = partitionSites(train, { kind: 'iid', sites, seed, testFraction: 0 });
  return partition.sites.map((images, i) => {
    const split = patientWiseSplit(images, { testFraction: valFraction, seed: mixSeed(seed, 11 + i) });
    return { train: split.train, validation: split.test };
  });
}
