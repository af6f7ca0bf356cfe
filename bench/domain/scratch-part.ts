import * as path from 'node:path';
import { assertHasImages, partitionSites, readBreakHisTree } from '@histofed/data';
async function main() {
  const ds = assertHasImages(await readBreakHisTree(path.resolve('../shared/data/breakhis-sample')));
  for (const seed of [1, 2, 3]) for (const kind of ['stain', 'label-skew', 'magnification'] as const) {
    const p = partitionSites(ds.images, { kind, sites: 3, seed, testFraction: 0, alpha: 0.3 });
    console.log(seed, kind, p.summary.sites.map((s) => `${s.images}img ${s.patients}pat ${s.cases}cases B${s.casesByLabel.benign}/M${s.casesByLabel.malignant}`).join(' | '), 'unused', JSON.stringify(p.summary.unused));
  }
}
main();
