import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { BREAKHIS_SUBTYPE_CODES, DEFAULT_RUN_MODEL, STAGE1_CLASSES, type ModelSpec } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { buildModelAsync, completeModelSpec } from '../model-spec';
import { loadModel, saveModel } from '../saved-model';
import { getWeights, setWeights } from '../weights-bridge';
import { tileFeatureExtractor } from './backbone';
import { splitTileClassifier } from './tile-classifier';

const SIZE = 64;
const tiles = (n: number, seed: number) => Float32Array.from({ length: n * SIZE * SIZE * 3 }, (_, i) => (Math.sin(i * 0.11 + seed) + 1) / 2);

describe('saved backbone models (tile classifiers)', () => {
  let tmp: string;
  let frozen: ModelSpec;
  beforeAll(async () => {
    await selectBackend('wasm');
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-tile-model-'));
    frozen = await completeModelSpec({ ...DEFAULT_RUN_MODEL, imageSize: SIZE, tiles: { scale: 0.5, views: 3 } });
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  async function roundTrip(spec: ModelSpec, name: string) {
    const extractor = await tileFeatureExtractor(spec.backbone!, SIZE);
    const trained = await buildModelAsync(spec, 7);
    // Non-trivial head weights.
    setWeights(trained, getWeights(trained).map((w) => ({ ...w, values: w.values.map((v, i) => v + 0.01 * Math.cos(i)) })));
    const dir = path.join(tmp, name);
    const manifest = await saveModel(dir, trained, {
      classes: [...STAGE1_CLASSES],
      subtypeClasses: [...BREAKHIS_SUBTYPE_CODES],
      spec,
      featureModel: extractor.model,
      provenance: { kind: 'local' },
    });
    const x = tiles(4, 1);
    const rows = await extractor.extract(x, 4, SIZE);
    const expected = (trained.predict(tf.tensor(rows, [4, ...extractor.rowShape])) as tf.Tensor).dataSync();
    return { dir, manifest, expected, x, trained, extractor };
  }

  it('saves heads on a frozen backbone as one tfjs model of a tile, with the tile geometry, and splits it back', async () => {
    const { dir, manifest, expected, x, trained, extractor } = await roundTrip(frozen, 'frozen');
    expect(manifest.preprocessing).toEqual(expect.objectContaining({ resize: 'tiles', tiles: { size: SIZE, scale: 0.5, grid: 'cover' } }));
    expect(manifest.spec.backbone?.sha256).toBe(frozen.backbone?.sha256);
    expect(manifest.spec.tiles).toEqual({ scale: 0.5, views: 3 });
    const json = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'));
    expect(JSON.stringify(json)).toContain('block_10_depthwise');
    const loaded = await loadModel(dir);
    // The whole model takes a tile and gives the two-stage output row.
    expect(loaded.model.inputs[0].shape).toEqual([null, SIZE, SIZE, 3]);
    const whole = (loaded.model.predict(tf.tensor4d(x, [4, SIZE, SIZE, 3])) as tf.Tensor).dataSync();
    whole.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 4));
    const split = await splitTileClassifier(loaded.model, loaded.manifest.spec);
    // The split's feature part is the same network as the backbone's: same id (cached features are reused).
    expect(split.extractor.id).toBe(extractor.id);
    const rows = await split.extractor.extract(x, 4, SIZE);
    const viaSplit = (split.trainable.predict(tf.tensor(rows, [4, 384])) as tf.Tensor).dataSync();
    viaSplit.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 5));
    split.trainable.dispose();
    trained.dispose();
    loaded.model.dispose();
  });

  it('fine-tunes the top blocks from the cached feature maps: same outputs as the frozen path before training, frozen batch-norm statistics', async () => {
    const spec = await completeModelSpec({ ...frozen, backbone: { ...frozen.backbone!, trainFrom: 'block_9_expand' } });
    const boundary = await tileFeatureExtractor(spec.backbone!, SIZE);
    expect(boundary.rowShape).toEqual([4, 4, 64]);
    const model = await buildModelAsync(spec, 3);
    expect(model.trainableWeights.map((w) => w.originalName)).toEqual(expect.arrayContaining(['block_9_depthwise/depthwise_kernel', 'block_10_expand/kernel', 'head/kernel']));
    // Up to the pooled features, the trainable copy computes what the frozen backbone computes.
    const x = tiles(2, 5);
    const pooledFrozen = await (await tileFeatureExtractor(frozen.backbone!, SIZE)).extract(x, 2, SIZE);
    const maps = await boundary.extract(x, 2, SIZE);
    const toGap = tfl.model({ inputs: model.inputs, outputs: model.getLayer('gap').output as tfl.SymbolicTensor });
    const pooled = (toGap.predict(tf.tensor(maps, [2, 4, 4, 64])) as tf.Tensor).dataSync();
    pooled.forEach((v, i) => expect(v).toBeCloseTo(pooledFrozen[i], 4));
    // One training step moves the kernels, not the batch-norm statistics, and not the shared backbone.
    const stats = () => getWeights(model).filter((w) => /moving_/.test(w.name)).map((w) => Array.from(w.values));
    const before = stats();
    const kernel = () => Array.from(getWeights(model).find((w) => w.name === 'block_10_expand/kernel')!.values.slice(0, 5));
    const k0 = kernel();
    const optimizer = tf.train.adam(1e-2);
    optimizer.minimize(() => tf.mean(tf.square(model.apply(tf.tensor(maps, [2, 4, 4, 64]), { training: true }) as tf.Tensor)) as tf.Scalar);
    optimizer.dispose();
    expect(stats()).toEqual(before);
    expect(kernel()).not.toEqual(k0);
    const again = await (await tileFeatureExtractor(frozen.backbone!, SIZE)).extract(x, 2, SIZE);
    expect(Array.from(again)).toEqual(Array.from(pooledFrozen));
    model.dispose();
    // Saved and split, a fine-tuned model gives the same outputs.
    const { dir, expected, x: x2, trained } = await roundTrip(spec, 'finetuned');
    const loaded = await loadModel(dir);
    const split = await splitTileClassifier(loaded.model, loaded.manifest.spec);
    const rows = await split.extractor.extract(x2, 4, SIZE);
    ((split.trainable.predict(tf.tensor(rows, [4, 4, 4, 64])) as tf.Tensor).dataSync()).forEach((v, i) => expect(v).toBeCloseTo(expected[i], 4));
    split.trainable.dispose();
    trained.dispose();
    loaded.model.dispose();
  });

  it('refuses to save a backbone model without its feature part, and a manifest whose tiles disagree', async () => {
    const trained = await buildModelAsync(frozen, 1);
    await expect(
      saveModel(path.join(tmp, 'bad'), trained, { classes: [...STAGE1_CLASSES], subtypeClasses: [...BREAKHIS_SUBTYPE_CODES], spec: frozen, provenance: { kind: 'local' } }),
    ).rejects.toThrow(/featureModel/);
    const extractor = await tileFeatureExtractor(frozen.backbone!, SIZE);
    await expect(
      saveModel(path.join(tmp, 'bad2'), trained, {
        classes: [...STAGE1_CLASSES],
        subtypeClasses: [...BREAKHIS_SUBTYPE_CODES],
        spec: frozen,
        featureModel: extractor.model,
        preprocessing: { scale: '0-1', resize: 'cover', stainNormalization: null },
        provenance: { kind: 'local' },
      }),
    ).rejects.toThrow(/tiles/);
    trained.dispose();
  });
});
