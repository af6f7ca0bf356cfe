import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { DEFAULT_BACKBONE, ValidationError, type BackboneSpec } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { completeModelSpec } from '../model-spec';
import { BackboneMismatchError, backboneLayerNames, resolveBackbone, tileFeatureExtractor } from './backbone';
import { layersModelDirSource, mobilenetV2Source } from './backbone-source';

const SIZE = 64;

describe('backbones', () => {
  let tmp: string;
  beforeAll(async () => {
    await selectBackend('wasm');
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-backbone-'));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('reads the ImageNet MobileNetV2 from the npm package offline, with a stable content hash', async () => {
    const source = await mobilenetV2Source();
    expect(source.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(source.origin).toMatch(/nsfwjs@4\.4\.0/);
    const names = backboneLayerNames(source);
    expect(names.slice(0, 3)).toEqual(['input_1', 'Conv1_pad', 'Conv1']);
    expect(names).toContain('block_10_project_BN');
  });

  it('resolves a spec: fills in the hash and the feature width of the cut, checks the layers', async () => {
    const r = await resolveBackbone(DEFAULT_BACKBONE, {}, SIZE);
    expect(r.spec.sha256).toBe((await mobilenetV2Source()).sha256);
    expect(r.spec.features).toBe(384);
    expect((await resolveBackbone({ ...DEFAULT_BACKBONE, cut: 'block_6_expand_relu' }, {}, SIZE)).spec.features).toBe(192);
    await expect(resolveBackbone({ ...DEFAULT_BACKBONE, cut: 'no_such_layer' }, {}, SIZE)).rejects.toThrow(/model.backbone.cut.*no_such_layer/);
    await expect(resolveBackbone({ ...DEFAULT_BACKBONE, trainFrom: 'block_12_expand' }, {}, SIZE)).rejects.toThrow(/trainFrom/);
    await expect(resolveBackbone({ ...DEFAULT_BACKBONE, name: 'layers-model' }, {}, SIZE)).rejects.toThrow(/--backbone DIR/);
    await expect(resolveBackbone({ ...DEFAULT_BACKBONE, features: 12 }, {}, SIZE)).rejects.toThrow(ValidationError);
  });

  it('refuses a backbone whose copy differs from the run\u2019s (a site with other files)', async () => {
    const wrong: BackboneSpec = { ...DEFAULT_BACKBONE, sha256: '0'.repeat(64) };
    await expect(resolveBackbone(wrong, {}, SIZE)).rejects.toThrow(BackboneMismatchError);
    await expect(resolveBackbone(wrong, {}, SIZE)).rejects.toThrow(/install the same backbone files/);
    await expect(completeModelSpec({ kind: 'backbone-head', imageSize: SIZE, numClasses: 2, backbone: wrong, tiles: { scale: 1, views: 0 } })).rejects.toThrow(
      BackboneMismatchError,
    );
  });

  it('extracts one feature vector per tile; the id follows the weights and the cut; tensors are released', async () => {
    const spec = (await resolveBackbone(DEFAULT_BACKBONE, {}, SIZE)).spec;
    const e = await tileFeatureExtractor(spec, SIZE);
    expect(e.rowShape).toEqual([384]);
    expect(e.id).toMatch(/^[0-9a-f]{64}$/);
    const tiles = Float32Array.from({ length: 3 * SIZE * SIZE * 3 }, (_, i) => (Math.sin(i * 0.37) + 1) / 2);
    const before = tf.memory().numTensors;
    const rows = await e.extract(tiles, 3, SIZE);
    expect(tf.memory().numTensors).toBe(before);
    expect(rows.length).toBe(3 * 384);
    expect(rows.every(Number.isFinite)).toBe(true);
    // Features after ReLU6 are in [0, 6]; the three tiles differ.
    expect(Math.min(...rows)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...rows)).toBeLessThanOrEqual(6);
    expect(rows.subarray(0, 384)).not.toEqual(rows.subarray(384, 768));
    // The same tile alone gives the same row (no batch effects: batch norm in inference mode).
    const single = await e.extract(tiles.subarray(SIZE * SIZE * 3, 2 * SIZE * SIZE * 3), 1, SIZE);
    single.forEach((v, i) => expect(v).toBeCloseTo(rows[384 + i], 4));
    const other = await tileFeatureExtractor({ ...spec, cut: 'block_6_expand_relu', features: undefined }, SIZE);
    expect(other.id).not.toBe(e.id);
    const unit = await tileFeatureExtractor({ ...spec, input: 'unit' }, SIZE);
    expect(unit.id).not.toBe(e.id);
    await expect(e.extract(tiles, 3, 32)).rejects.toThrow(/64 px/);
  });

  it('takes any tfjs Layers model directory as a backbone (hash of its files, cut by layer name)', async () => {
    const input = tfl.input({ shape: [32, 32, 3], name: 'img' });
    let x = tfl.layers.conv2d({ name: 'c1', filters: 4, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(input) as tfl.SymbolicTensor;
    x = tfl.layers.conv2d({ name: 'c2', filters: 6, kernelSize: 3, strides: 2, activation: 'relu' }).apply(x) as tfl.SymbolicTensor;
    const out = tfl.layers.dense({ name: 'cls', units: 2 }).apply(tfl.layers.flatten({ name: 'flat' }).apply(x)) as tfl.SymbolicTensor;
    const model = tfl.model({ inputs: input, outputs: out });
    const dir = path.join(tmp, 'keras-like');
    // The two files any tfjs or tensorflowjs_converter writes: model.json and a weight shard.
    await mkdir(dir, { recursive: true });
    await model.save(
      tf.io.withSaveHandler(async (a) => {
        await writeFile(path.join(dir, 'group1-shard1of1.bin'), new Uint8Array(tf.io.CompositeArrayBuffer.join(a.weightData as ArrayBuffer)));
        await writeFile(
          path.join(dir, 'model.json'),
          JSON.stringify({ modelTopology: a.modelTopology, format: 'layers-model', weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: a.weightSpecs }] }),
        );
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    const source = await layersModelDirSource(dir);
    expect((await layersModelDirSource(dir)).sha256).toBe(source.sha256);
    const spec: BackboneSpec = { name: 'layers-model', cut: 'c2', input: 'unit' };
    const r = await resolveBackbone(spec, { dir }, 48);
    expect(r.spec.features).toBe(6);
    const e = await tileFeatureExtractor(r.spec, 48, { dir });
    expect((await e.extract(new Float32Array(48 * 48 * 3).fill(0.5), 1, 48)).length).toBe(6);
    await expect(layersModelDirSource(path.join(tmp, 'nowhere'))).rejects.toThrow(/model.json is missing/);
    model.dispose();
  });
});
