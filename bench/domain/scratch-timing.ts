import * as path from 'node:path';
import { DEFAULT_AUGMENTATION, assertHasImages, createStainShifter, loadTileSet, readBreakHisTree, siteStainShift } from '@histofed/data';
import { MOBILENET_V2_IMAGENET, createTrainingPool, parseBackendChoice, resolveBackbone, selectBackend } from '@histofed/ml';

async function main() {
  const ds = assertHasImages(await readBreakHisTree(path.resolve('../shared/data/breakhis-sample')));
  await selectBackend(parseBackendChoice('auto'));
  const resolved = await resolveBackbone({ name: MOBILENET_V2_IMAGENET, cut: 'block_10_depthwise_relu', input: 'signed' }, {}, 224);
  const shift = siteStainShift(0, 1, { rotationDegrees: [4, 16], scaleChange: [0.2, 0.4] });
  const sh = createStainShifter(shift);
  const pool = await createTrainingPool({ workers: 2, backend: parseBackendChoice('auto') });
  const extractor = await pool.featureExtractor(resolved.spec, 224);
  for (const n of [4, 16]) {
    const imgs = ds.images.slice(20, 20 + n);
    const transform = { key: 'x' + Date.now(), apply: (rgb: Float32Array) => sh(rgb) };
    const t = Date.now();
    const g = await loadTileSet(imgs, { geometry: { size: 224, scale: 1 }, extractor, transform, concurrency: 4, views: { views: 8, seed: 1, augment: DEFAULT_AUGMENTATION, hedSigma: 0.05 } });
    console.log('pool', n, g.count, 'tiles', (Date.now() - t) / 1000, 's');
  }
  await pool.close();
}
main().catch((e) => { console.error(e); process.exit(1); });
