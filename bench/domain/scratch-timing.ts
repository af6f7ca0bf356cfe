import * as path from 'node:path';
import { assertHasImages, createStainShifter, loadTileSet, readBreakHisTree, siteStainShift } from '@histofed/data';
import { MOBILENET_V2_IMAGENET, createTrainingPool, parseBackendChoice, resolveBackbone, selectBackend, tileFeatureExtractor } from '@histofed/ml';

async function main() {
  const ds = assertHasImages(await readBreakHisTree(path.resolve('../shared/data/breakhis-sample')));
  await selectBackend(parseBackendChoice('auto'));
  const resolved = await resolveBackbone({ name: MOBILENET_V2_IMAGENET, cut: 'block_10_depthwise_relu', input: 'signed' }, {}, 224);
  const imgs = ds.images.slice(0, 8);
  const shift = siteStainShift(0, 1, { rotationDegrees: [4, 16], scaleChange: [0.2, 0.4] });
  const sh = createStainShifter(shift);
  const transform = { key: 'x' + Date.now(), apply: (rgb: Float32Array) => sh(rgb) };
  for (const mode of ['main', 'pool']) {
    let extractor;
    let pool;
    if (mode === 'main') extractor = await tileFeatureExtractor(resolved.spec, 224);
    else { pool = await createTrainingPool({ workers: 2, backend: parseBackendChoice('auto') }); extractor = await pool.featureExtractor(resolved.spec, 224); }
    const t = Date.now();
    const g = await loadTileSet(imgs, { geometry: { size: 224, scale: 1 }, extractor, transform, views: { views: 8, seed: 1, augment: { flip: true } as never, hedSigma: 0.05 } as never });
    console.log(mode, g.count, 'tiles', (Date.now() - t) / 1000, 's');
    await pool?.close();
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
