import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { ClinicalSchema, LabeledImages, ModelSpec } from '@histofed/fl-core';
import { ImageDropout, RecordDropout, fusionOptionsOf } from './fusion-model';
import { selectBackend } from '../backend';
import { evaluateModel, predictProbabilities } from '../evaluate';
import { buildModel, featureInputShape, validateModelSpec } from '../models';
import { mulberry32 } from '../random';
import { loadModel, saveModel } from '../saved-model';
import { trainLocal } from '../train';
import { getWeights } from '../weights-bridge';

const F = 6;
/** Clinical layout as libs/data encodes it: [value, missing] for one numeric column, then the no-record flag. */
const C = 3;

function fusionSpec(gate: 0 | 1): ModelSpec {
  return {
    kind: 'backbone-head',
    imageSize: 32,
    numClasses: 2,
    backbone: { name: 'mobilenet-v2-imagenet', cut: 'block_1_project_BN', input: 'signed', features: F, sha256: 'a'.repeat(64) },
    tiles: { scale: 1, views: 0 },
    options: { denseUnits: 0, dropout: 0, clinicalWidth: C, fusionGate: gate, tabularUnits: 8 },
  };
}

/**
 * Rows whose image features are noise; the label is malignant when the clinical value is above 0.5,
 * and every patient without a record (flag set, value 0) is malignant: only the clinical part, and
 * its missing path, can tell.
 */
function rows(n: number, seed: number): LabeledImages {
  const rand = mulberry32(seed);
  const images = new Float32Array(n * (F + C));
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * (F + C);
    for (let j = 0; j < F; j++) images[o + j] = rand() * 2 - 1;
    const noRecord = i % 4 === 0;
    const value = rand();
    if (noRecord) images[o + F + 2] = 1;
    else images[o + F] = value;
    labels[i] = noRecord || value > 0.5 ? 1 : 0;
  }
  return { images, labels, count: n, imageSize: 32, sampleShape: [F + C] };
}

describe('fusion of tile features with a clinical record (issue 19)', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });

  it.each([0, 1] as const)('fusionGate %i: reads [features + clinical] rows and learns from the record, and from its absence', async (gate) => {
    const spec = fusionSpec(gate);
    expect(featureInputShape(spec)).toEqual([F + C]);
    const model = buildModel(spec, 2);
    try {
      expect(getWeights(model).map((w) => w.name)).toEqual(
        gate ? expect.arrayContaining(['tab_fc/kernel', 'tab_gate/kernel', 'tab_gate/bias', 'head/kernel']) : expect.arrayContaining(['tab_fc/kernel', 'head/kernel']),
      );
      await trainLocal(model, rows(400, 1), { epochs: 30, batchSize: 32, learningRate: 0.02, proximalMu: 0, seed: 3 });
      const test = rows(200, 9);
      expect(evaluateModel(model, test).metrics['accuracy']).toBeGreaterThanOrEqual(0.85);
      // The missing path: a row with only the no-record flag set is called malignant.
      const missing = new Float32Array(F + C);
      missing[F + 2] = 1;
      expect(predictProbabilities(model, missing, 1, [F + C])[1]).toBeGreaterThan(0.5);
    } finally {
      model.dispose();
    }
  });

  it('saves its trained part, which loads with the same outputs', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'histofed-fusion-'));
    const spec = fusionSpec(1);
    const model = buildModel(spec, 5);
    try {
      await saveModel(dir, model, { classes: ['benign', 'malignant'], spec, provenance: { kind: 'global' } });
      const loaded = await loadModel(dir);
      try {
        const x = rows(4, 2).images;
        expect(Array.from(predictProbabilities(loaded.model, x, 4, [F + C]))).toEqual(Array.from(predictProbabilities(model, x, 4, [F + C])));
      } finally {
        loaded.model.dispose();
      }
    } finally {
      model.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad fusion options and a fine-tuned backbone, naming the option', () => {
    const spec = fusionSpec(0);
    expect(() => validateModelSpec({ ...spec, options: { ...spec.options, fusionGate: 2 } })).toThrow(/model.options.fusionGate/);
    expect(() => validateModelSpec({ ...spec, options: { ...spec.options, clinicalWidth: 1.5 } })).toThrow(/model.options.clinicalWidth/);
    expect(() => validateModelSpec({ ...spec, backbone: { ...(spec.backbone as NonNullable<ModelSpec['backbone']>), trainFrom: 'block_1_expand' } })).toThrow(/no backbone.trainFrom/);
    expect(() => validateModelSpec({ kind: 'se-cnn', imageSize: 32, numClasses: 2, options: { clinicalWidth: 3 } })).toThrow(/unknown option for se-cnn/);
  });

  it('takes the record width from a declared clinical schema (the run config), which an explicit width must match', () => {
    const declared: ClinicalSchema = { columns: [{ name: 'age', type: 'numeric', min: 20, max: 90 }] };
    const { clinicalWidth: _, ...options } = fusionSpec(0).options as Record<string, number>;
    const spec: ModelSpec = { ...fusionSpec(0), options, clinical: declared };
    expect(fusionOptionsOf(spec)).toEqual(expect.objectContaining({ clinicalWidth: C }));
    expect(featureInputShape(spec)).toEqual([F + C]);
    expect(fusionOptionsOf({ ...spec, options: { ...options, clinicalWidth: C } })?.clinicalWidth).toBe(C);
    expect(() => fusionOptionsOf({ ...spec, options: { ...options, clinicalWidth: 5 } })).toThrow(/clinicalWidth: 5, but the declared clinical columns encode to 3/);
    expect(fusionOptionsOf({ ...spec, clinical: undefined })).toBeNull();
  });

  it('tabularUnits 0 reads the record linearly (no tab_fc); imageDropout adds its layer', () => {
    const spec = fusionSpec(0);
    const model = buildModel({ ...spec, options: { ...spec.options, tabularUnits: 0, imageDropout: 0.3 } }, 2);
    try {
      const names = getWeights(model).map((w) => w.name);
      expect(names.some((n) => n.startsWith('tab_fc'))).toBe(false);
      expect(model.getLayer('image_dropout')).toBeInstanceOf(ImageDropout);
      // The heads read F image features and the C record values directly.
      expect(getWeights(model).find((w) => w.name === 'head/kernel')?.shape).toEqual([F + C, 2]);
    } finally {
      model.dispose();
    }
    expect(() => validateModelSpec({ ...spec, options: { ...spec.options, imageDropout: 1 } })).toThrow(/model.options.imageDropout/);
  });

  it('ImageDropout zeroes whole rows at the given rate while training and passes everything at inference', () => {
    const layer = new ImageDropout({ rate: 0.3, seed: 4 });
    const x = tf.ones([2000, 5]);
    try {
      const inference = layer.apply(x, { training: false }) as tf.Tensor;
      expect(tf.sum(inference).arraySync()).toBe(10000);
      const trained = layer.apply(x, { training: true }) as tf.Tensor2D;
      const sums = tf.sum(trained, 1);
      const rowSums = sums.arraySync() as number[];
      sums.dispose();
      // Every row is either whole or all zeros; about 30 % are dropped.
      expect(rowSums.every((v) => v === 0 || v === 5)).toBe(true);
      const dropped = rowSums.filter((v) => v === 0).length / rowSums.length;
      expect(dropped).toBeGreaterThan(0.25);
      expect(dropped).toBeLessThan(0.35);
      tf.dispose([inference, trained]);
    } finally {
      x.dispose();
    }
  });

  it('RecordDropout replaces whole records by the no-record encoding while training only', () => {
    const layer = new RecordDropout({ rate: 0.5, seed: 7 });
    const x = tf.fill([1000, 4], 0.25);
    try {
      const inference = layer.apply(x, { training: false }) as tf.Tensor2D;
      expect((inference.arraySync() as number[][]).every((r) => r.every((v) => v === 0.25))).toBe(true);
      const out = layer.apply(x, { training: true }) as tf.Tensor2D;
      const trained = out.arraySync() as number[][];
      out.dispose();
      const dropped = trained.filter((r) => r.join() === '0,0,0,1').length;
      expect(trained.every((r) => r.join() === '0,0,0,1' || r.every((v) => v === 0.25))).toBe(true);
      expect(dropped / trained.length).toBeGreaterThan(0.44);
      expect(dropped / trained.length).toBeLessThan(0.56);
      expect(() => new RecordDropout({ rate: 1, seed: 1 })).toThrow(/model.options.recordDropout/);
      inference.dispose();
    } finally {
      x.dispose();
    }
  });
});
