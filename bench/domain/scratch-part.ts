import * as path from 'node:path';
import { assertHasImages, partitionSites, readBreakHisTree } from '@histofed/data';
async function main() {
  const ds = assertHasImages(await readBreakHisTree(path.resolve('../shared/data/breakhis-sample')));
  for (let seed = 1; seed <= 20; seed++) for (const kind of ['label-skew'] as const) {
    const p = partitionSites(ds.images, { kind, sites: 3, seed, testFraction: 0, alpha: 0.3 });
    console.log(seed, kind, p.summary.sites.map((s) => `${s.images}img ${s.patients}pat B${s.casesByLabel.benign}/M${s.casesByLabel.malignant}`).join(' | '));
  }
}
main();
