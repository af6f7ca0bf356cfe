import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { buildModel } from './models';
import { saveModel } from './saved-model';
import { twoStageImages } from './testing/synthetic';
import { trainLocal } from './train';
import { buildTransferModel, loadLayersModelDir, setTrainableBaseLayers } from './transfer';
import { getWeights, trainableWeightNames } from './weights-bridge';

const source: ModelSpec = { kind: 'se-cnn', imageSize: 16, numClasses: 2, options: { dropout: 0 } };
const target: ModelSpec = { kind: 'se-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { dropout: 0 } };
let root: string;

beforeAll(async () => {
  await selectBackend('wasm');
  root = await mkdtemp(path.join(os.tmpdir(), 'histofed-transfer-'));
  const m = buildModel(source, 9);
  await saveModel(path.join(root, 'base'), m, { classes: ['benign', 'malignant'], spec: source, provenance: { kind: 'centralized' } });
  m.dispose();
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('transfer learning from a model on disk', () => {
  it('keeps the convolutional base (weights included), adds new heads, and trains only what is unfrozen', async () => {
    const base = await loadLayersModelDir(path.join(root, 'base'));
    const baseConv3 = getWeights(base).find((t) => t.name === 'conv3/kernel')?.values;
    const t = buildTransferModel(base, target);
    expect(t.baseLayers).toContain('conv3');
    expect(t.baseLayers).not.toContain('gap');
    expect(t.model.outputs[0].shape).toEqual([null, 6]);
    const before = getWeights(t.model);
    expect(before.find((w) => w.name === 'conv3/kernel')?.values).toEqual(baseConv3);

    // Frozen base: only the heads train.
    expect(trainableWeightNames(t.model).every((n) => /^(fc1|head|subtype_head)\//.test(n))).toBe(true);
    const data = twoStageImages(16, 16, 3);
    await trainLocal(t.model, data, { epochs: 1, batchSize: 8, learningRate: 0.01, proximalMu: 0, seed: 1 });
    const afterHeads = getWeights(t.model);
    const changed = (a: typeof before, b: typeof before, name: string) =>
      a.find((w) => w.name === name)?.values.some((v, i) => v !== b.find((w) => w.name === name)?.values[i]);
    expect(changed(before, afterHeads, 'conv3/kernel')).toBe(false);
    expect(changed(before, afterHeads, 'subtype_head/kernel')).toBe(true);

    // Unfreeze the last 2 base layers with weights: se3_expand and se3_reduce (conv3 stays frozen).
    expect(setTrainableBaseLayers(t, 2).sort()).toEqual(['se3_expand', 'se3_reduce']);
    await trainLocal(t.model, data, { epochs: 1, batchSize: 8, learningRate: 0.01, proximalMu: 0, seed: 2 });
    const afterFine = getWeights(t.model);
    expect(changed(afterHeads, afterFine, 'se3_expand/kernel')).toBe(true);
    expect(changed(afterHeads, afterFine, 'conv3/kernel')).toBe(false);
    setTrainableBaseLayers(t, Infinity);
    expect(trainableWeightNames(t.model)).toContain('conv1/kernel');
    t.model.dispose();
  });

  it('refuses a base for another input size or a directory without a model, naming what was expected', async () => {
    const base = await loadLayersModelDir(path.join(root, 'base'));
    expect(() => buildTransferModel(base, { ...target, imageSize: 32 })).toThrow(/takes 16x16 images, the spec asks for 32x32/);
    base.dispose();
    await expect(loadLayersModelDir(root)).rejects.toThrow(ValidationError);
    await expect(loadLayersModelDir(root)).rejects.toThrow(/model.json is missing/);
  });
});
