import { cp, mkdtemp, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { buildModel } from './models';
import { MANIFEST_FILE, MODEL_JSON_FILE, WEIGHTS_FILE, loadModel, readModelManifest, saveModel } from './saved-model';
import { isEnsembleDir, loadEnsemble, saveEnsembleManifest } from './saved-ensemble';
import { getWeights, setWeights } from './weights-bridge';

const spec: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { batchNorm: 1 } };
const fields = {
  classes: ['benign', 'malignant'],
  spec,
  provenance: { kind: 'global' as const, runId: 'run-1', round: 3, sites: ['site-1', 'site-2'] },
};

function predict(m: ReturnType<typeof buildModel>): Float32Array {
  return tf.tidy(() => (m.predict(tf.fill([2, 16, 16, 3], 0.3)) as tf.Tensor).dataSync() as Float32Array);
}

describe('saved model', () => {
  let root: string;
  let good: string;

  beforeAll(async () => {
    await selectBackend('wasm');
    root = await mkdtemp(path.join(os.tmpdir(), 'histofed-saved-model-'));
    good = path.join(root, 'good');
    const m = buildModel(spec, 7);
    // non-trivial batch-norm statistics, so that saving the non-trainable weights is visible
    setWeights(
      m,
      getWeights(m).map((t) => (t.name.endsWith('moving_variance') ? { ...t, values: t.values.map((_, i) => 1 + i / 7) } : t)),
    );
    await saveModel(good, m, fields);
    m.dispose();
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** A copy of the good directory, damaged by `damage`. */
  async function damaged(name: string, damage: (dir: string) => Promise<void>): Promise<string> {
    const dir = path.join(root, name);
    await cp(good, dir, { recursive: true });
    await damage(dir);
    return dir;
  }

  async function editManifest(dir: string, edit: (m: Record<string, unknown>) => void): Promise<void> {
    const file = path.join(dir, MANIFEST_FILE);
    const m = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    edit(m);
    await writeFile(file, JSON.stringify(m));
  }

  it('round-trips every weight exactly, with the weight names the federation uses', async () => {
    const original = buildModel(spec, 7);
    setWeights(
      original,
      getWeights(original).map((t) =>
        t.name.endsWith('moving_variance') ? { ...t, values: t.values.map((_, i) => 1 + i / 7) } : t,
      ),
    );
    const { model, manifest } = await loadModel(good, { inputSize: 16 });
    expect(getWeights(model)).toEqual(getWeights(original));
    expect(getWeights(model).map((t) => t.name)).toContain('bn1/moving_variance');
    expect(predict(model)).toEqual(predict(original));

    // a federated weight set from another model instance fits the loaded model
    const other = buildModel(spec, 99);
    setWeights(model, getWeights(other));
    expect(getWeights(model)).toEqual(getWeights(other));

    expect(manifest).toMatchObject({
      format: 'histofed-model',
      formatVersion: 1,
      software: 'histofed 0.1.0',
      classes: ['benign', 'malignant'],
      inputSize: 16,
      spec,
      preprocessing: { scale: '0-1', resize: 'cover', stainNormalization: null },
      provenance: { kind: 'global', runId: 'run-1', round: 3, sites: ['site-1', 'site-2'], backend: 'wasm' },
    });
    expect(Number.isNaN(Date.parse(manifest.provenance.createdAt))).toBe(false);
    expect(manifest.parameters).toBe(getWeights(original).reduce((n, t) => n + t.values.length, 0));
    expect(await readModelManifest(good)).toEqual(manifest);
    for (const m of [original, model, other]) m.dispose();
  });

  it('writes a standard tfjs layout', async () => {
    const json = JSON.parse(await readFile(path.join(good, MODEL_JSON_FILE), 'utf8')) as {
      weightsManifest: { paths: string[]; weights: { name: string }[] }[];
    };
    expect(json.weightsManifest[0].paths).toEqual(['./weights.bin']);
    expect(json.weightsManifest[0].weights.map((w) => w.name)).toContain('conv1/kernel');
    expect(existsSync(path.join(good, WEIGHTS_FILE))).toBe(true);
  });

  it('refuses a model for another input size, naming both sizes', async () => {
    await expect(loadModel(good, { inputSize: 32 })).rejects.toThrow(ValidationError);
    await expect(loadModel(good, { inputSize: 32 })).rejects.toThrow(/good: made for 16 px input, expected 32 px/);
  });

  it('refuses a directory that does not exist', async () => {
    await expect(loadModel(path.join(root, 'nope'))).rejects.toThrow(/nope: no such directory/);
  });

  it.each([MANIFEST_FILE, MODEL_JSON_FILE, WEIGHTS_FILE])('refuses a directory without %s, naming it', async (file) => {
    const dir = await damaged(`missing-${file}`, (d) => unlink(path.join(d, file)));
    const err = await loadModel(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toContain(dir);
    expect((err as Error).message).toContain(`${file} is missing`);
  });

  it('refuses a manifest of another format', async () => {
    const dir = await damaged('other-format', (d) => editManifest(d, (m) => (m['format'] = 'keras')));
    await expect(loadModel(dir)).rejects.toThrow(/histofed-model\.json: format is "keras", expected "histofed-model"/);
  });

  it('refuses a manifest of another format version, naming the software that wrote it', async () => {
    const dir = await damaged('other-version', (d) =>
      editManifest(d, (m) => {
        m['formatVersion'] = 2;
        m['software'] = 'histofed 0.9.0';
      }),
    );
    await expect(loadModel(dir)).rejects.toThrow(
      /formatVersion 2 \(written by "histofed 0\.9\.0"\) is not supported; histofed 0\.1\.0 reads formatVersion 1/,
    );
  });

  it('refuses an invalid manifest, naming the field', async () => {
    const dir = await damaged('bad-kind', (d) =>
      editManifest(d, (m) => ((m['provenance'] as Record<string, unknown>)['kind'] = 'federated')),
    );
    await expect(loadModel(dir)).rejects.toThrow(/histofed-model\.json: invalid manifest: provenance\.kind/);
    const notJson = await damaged('not-json', (d) => writeFile(path.join(d, MANIFEST_FILE), '{ nope'));
    await expect(loadModel(notJson)).rejects.toThrow(/histofed-model\.json: not valid JSON/);
  });

  it('refuses a manifest that disagrees with the model', async () => {
    const dir = await damaged('three-classes', (d) =>
      editManifest(d, (m) => {
        m['classes'] = ['a', 'b', 'c'];
        m['spec'] = { ...spec, numClasses: 3 };
      }),
    );
    await expect(loadModel(dir)).rejects.toThrow(/outputs 2 values per image, the manifest lists 3 classes/);
  });

  it('refuses a truncated weights file', async () => {
    const dir = await damaged('truncated', (d) => truncate(path.join(d, WEIGHTS_FILE), 100));
    await expect(loadModel(dir)).rejects.toThrow(/weights\.bin: 100 bytes, model\.json describes \d+/);
  });

  it('refuses to save fields that disagree with the model', async () => {
    const m = buildModel(spec, 1);
    await expect(
      saveModel(path.join(root, 'bad-save'), m, { ...fields, classes: ['a', 'b', 'c'], spec: { ...spec, numClasses: 3 } }),
    ).rejects.toThrow(/outputs 2 values per image, the manifest lists 3 classes/);
    await expect(saveModel(path.join(root, 'bad-save'), m, { ...fields, classes: ['a'] })).rejects.toThrow(
      /invalid manifest fields: classes/,
    );
    expect(existsSync(path.join(root, 'bad-save'))).toBe(false);
    m.dispose();
  });
});

describe('two-stage models and ensembles on disk', () => {
  const twoStage: ModelSpec = { kind: 'se-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1] };
  const twoStageFields = { classes: ['benign', 'malignant'], subtypeClasses: ['A', 'F', 'DC', 'LC'], spec: twoStage, provenance: { kind: 'centralized' as const } };
  let root: string;

  beforeAll(async () => {
    await selectBackend('wasm');
    root = await mkdtemp(path.join(os.tmpdir(), 'histofed-ensemble-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('round-trips a two-stage SE model with its subtype classes; a manifest without them is refused', async () => {
    const m = buildModel(twoStage, 3);
    await saveModel(path.join(root, 'a'), m, twoStageFields);
    const loaded = await loadModel(path.join(root, 'a'));
    expect(loaded.manifest.subtypeClasses).toEqual(['A', 'F', 'DC', 'LC']);
    expect(loaded.manifest.spec.subtypeParents).toEqual([0, 0, 1, 1]);
    expect(Array.from(predict(loaded.model))).toEqual(Array.from(predict(m)));
    loaded.model.dispose();
    await expect(saveModel(path.join(root, 'bad'), m, { ...twoStageFields, subtypeClasses: undefined })).rejects.toThrow(
      /subtypeParents has 4 subtypes, subtypeClasses lists 0/,
    );
    m.dispose();
  });

  it('an attention model (custom layer) loads again', async () => {
    const s: ModelSpec = { ...twoStage, kind: 'attention-cnn' };
    const m = buildModel(s, 4);
    await saveModel(path.join(root, 'att'), m, { ...twoStageFields, spec: s });
    const loaded = await loadModel(path.join(root, 'att'));
    expect(Array.from(predict(loaded.model))).toEqual(Array.from(predict(m)));
    loaded.model.dispose();
    m.dispose();
  });

  it('an ensemble directory lists members of one task; another task or a missing member is refused by name', async () => {
    const dir = path.join(root, 'ens');
    for (const [name, seed] of [['global', 1], ['site-1', 2]] as const) {
      const m = buildModel(twoStage, seed);
      await saveModel(path.join(dir, name), m, twoStageFields);
      m.dispose();
    }
    expect(isEnsembleDir(dir)).toBe(false);
    await saveEnsembleManifest(dir, ['global', 'site-1']);
    expect(isEnsembleDir(dir)).toBe(true);
    const e = await loadEnsemble(dir);
    expect(e.members.map((m) => m.name)).toEqual(['global', 'site-1']);
    for (const m of e.members) m.model.dispose();

    const other = buildModel({ ...twoStage, imageSize: 24 }, 1);
    await saveModel(path.join(dir, 'site-2'), other, { ...twoStageFields, spec: { ...twoStage, imageSize: 24 } });
    other.dispose();
    await expect(saveEnsembleManifest(dir, ['global', 'site-2'])).rejects.toThrow(/member "site-2" is made for another task/);
    await expect(saveEnsembleManifest(dir, ['global', 'site-9'])).rejects.toThrow(/site-9/);
    await expect(saveEnsembleManifest(dir, ['../global'])).rejects.toThrow(/sub-directory name/);
  });
});
