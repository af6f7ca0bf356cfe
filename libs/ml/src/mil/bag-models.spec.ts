import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { LabeledImages, ModelSpec } from '@histofed/fl-core';
import { BAG_SLOT_EXTRA, ValidationError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { evaluateModel, predictProbabilities } from '../evaluate';
import { buildModel, describeModel, featureInputShape, validateModelSpec } from '../models';
import { mulberry32 } from '../random';
import { loadModel, saveModel } from '../saved-model';
import { trainLocal } from '../train';
import { getWeights } from '../weights-bridge';
import { isBagLayersModel, tileAttention } from './bag-models';

const DIM = 8;
const SLOT = DIM + BAG_SLOT_EXTRA;

/** A frozen-backbone spec of a bag kind over DIM features (sha256 and features filled as a resolved spec has them). */
function bagSpec(kind: 'attention-mil' | 'transformer-mil', options: Record<string, number> = {}, twoStage = false): ModelSpec {
  return {
    kind,
    imageSize: 32,
    numClasses: 2,
    ...(twoStage ? { subtypeParents: [0, 0, 1, 1] } : {}),
    backbone: { name: 'mobilenet-v2-imagenet', cut: 'block_1_project_BN', input: 'signed', features: DIM, sha256: 'a'.repeat(64) },
    tiles: { scale: 1, views: 0 },
    options: { bagTiles: 8, ...options },
  };
}

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/**
 * `n` bags of 3..8 noise tiles (N(0, 1) features) in 8 slots; every other bag is positive and has
 * one signal tile (a fixed pattern plus a little noise) at a random slot. Returns the bag rows and
 * the slot of each bag's signal tile (-1 for a negative bag).
 */
function signalBags(n: number, seed: number): { data: LabeledImages; signalAt: number[]; tiles: number[] } {
  const rand = mulberry32(seed);
  const pattern = [2, 2, -2, -2, 2, -2, 2, -2];
  const values = new Float32Array(n * 8 * SLOT);
  const labels = new Int32Array(n);
  const subtypes = new Int32Array(n);
  const signalAt: number[] = [];
  const tiles: number[] = [];
  for (let b = 0; b < n; b++) {
    const count = 3 + Math.floor(rand() * 6);
    const positive = b % 2 === 1;
    const at = positive ? Math.floor(rand() * count) : -1;
    for (let t = 0; t < count; t++) {
      const o = (b * 8 + t) * SLOT;
      for (let j = 0; j < DIM; j++) values[o + j] = t === at ? pattern[j] + 0.3 * gaussian(rand) : gaussian(rand);
      values[o + DIM] = 1;
      values[o + DIM + 1] = (t >> 2) / 2 + 0.25;
      values[o + DIM + 2] = (t % 4) / 4 + 0.125;
    }
    labels[b] = positive ? 1 : 0;
    subtypes[b] = (positive ? 2 : 0) + (values[b * 8 * SLOT] > 0 ? 1 : 0);
    signalAt.push(at);
    tiles.push(count);
  }
  return {
    data: { images: values, labels, subtypes, count: n, imageSize: 32, sampleShape: [8, SLOT], groups: Array.from({ length: n }, (_, b) => `p${b}`) },
    signalAt,
    tiles,
  };
}

describe('bag models (attention-MIL, transformer over tiles)', () => {
  beforeAll(async () => {
    await selectBackend('wasm'); // the backend sites train on
  });

  it.each(['attention-mil', 'transformer-mil'] as const)(
    '%s: reads bags [bagTiles, features + 3], weighs each bag\'s tiles to 1 with 0 on padding, and padding does not change the output',
    (kind) => {
      const spec = bagSpec(kind, kind === 'transformer-mil' ? { denseUnits: 16, heads: 2 } : {}, true);
      expect(featureInputShape(spec)).toEqual([8, SLOT]);
      const model = buildModel(spec, 3);
      try {
        expect(isBagLayersModel(model)).toBe(true);
        expect(model.outputs[0].shape).toEqual([null, 2 + 4]);
        const { data, tiles } = signalBags(6, 1);
        const a = tileAttention(model, data.images, data.count);
        for (let b = 0; b < 6; b++) {
          const row = Array.from(a.subarray(b * 8, (b + 1) * 8));
          expect(row.slice(0, tiles[b]).reduce((x, y) => x + y, 0)).toBeCloseTo(1, 5);
          expect(row.slice(tiles[b]).every((v) => v === 0)).toBe(true);
          expect(row.slice(0, tiles[b]).every((v) => v > 0)).toBe(true);
        }
        // Garbage in the padded slots (mask still 0) changes nothing.
        const noisy = Float32Array.from(data.images);
        for (let b = 0; b < 6; b++) for (let t = tiles[b]; t < 8; t++) for (let j = 0; j < DIM; j++) noisy[(b * 8 + t) * SLOT + j] = 50;
        const clean = predictProbabilities(model, data.images, 6, [8, SLOT]);
        const dirty = predictProbabilities(model, noisy, 6, [8, SLOT]);
        clean.forEach((v, i) => expect(dirty[i]).toBeCloseTo(v, 5));
        // Stage-1 and subtype softmax rows.
        for (let b = 0; b < 6; b++) {
          expect(clean[b * 6] + clean[b * 6 + 1]).toBeCloseTo(1, 5);
          expect(clean.subarray(b * 6 + 2, b * 6 + 6).reduce((x, y) => x + y, 0)).toBeCloseTo(1, 5);
        }
        expect(describeModel(model).multiplyAdds).toBeGreaterThan(0);
      } finally {
        model.dispose();
      }
    },
  );

  it('builds the same weights from the same seed, with fixed names', () => {
    const spec = bagSpec('attention-mil', { denseUnits: 4, attentionUnits: 6 });
    const a = buildModel(spec, 5);
    const b = buildModel(spec, 5);
    try {
      const wa = getWeights(a);
      expect(wa.map((w) => w.name)).toEqual(['tile_embed/kernel', 'tile_embed/bias', 'attention/v_kernel', 'attention/v_bias', 'attention/u_kernel', 'attention/u_bias', 'attention/w_kernel', 'head/kernel', 'head/bias']);
      expect(getWeights(b).map((w) => Array.from(w.values))).toEqual(wa.map((w) => Array.from(w.values)));
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('learns a bag label decided by one tile with the ordinary trainer, and puts the attention of positive bags on that tile', async () => {
    const spec = bagSpec('attention-mil', { attentionUnits: 16, dropout: 0 });
    const model = buildModel(spec, 1);
    try {
      const train = signalBags(160, 11);
      const before = tf.memory().numTensors;
      await trainLocal(model, train.data, { epochs: 12, batchSize: 16, learningRate: 0.01, proximalMu: 0, seed: 2 });
      expect(tf.memory().numTensors).toBe(before);
      const test = signalBags(40, 99);
      const evaluation = evaluateModel(model, test.data);
      expect(evaluation.metrics['accuracy']).toBeGreaterThanOrEqual(0.9);
      const a = tileAttention(model, test.data.images, test.data.count);
      let onSignal = 0;
      let positives = 0;
      test.signalAt.forEach((at, b) => {
        if (at < 0) return;
        positives++;
        const row = Array.from(a.subarray(b * 8, (b + 1) * 8));
        if (row.indexOf(Math.max(...row)) === at) onSignal++;
      });
      expect(onSignal / positives).toBeGreaterThanOrEqual(0.9);
    } finally {
      model.dispose();
    }
  });

  it('trains the transformer head on bags (its loss falls) without leaking tensors', async () => {
    const spec = bagSpec('transformer-mil', { denseUnits: 16, heads: 2, dropout: 0 });
    const model = buildModel(spec, 1);
    try {
      const train = signalBags(96, 5);
      const initial = evaluateModel(model, train.data).metrics['loss'];
      const before = tf.memory().numTensors;
      await trainLocal(model, train.data, { epochs: 8, batchSize: 16, learningRate: 0.005, proximalMu: 0, seed: 2 });
      expect(tf.memory().numTensors).toBe(before);
      expect(evaluateModel(model, train.data).metrics['loss']).toBeLessThan(initial * 0.7);
    } finally {
      model.dispose();
    }
  });

  it('saves a bag model as its trained part, which loads with the same outputs and attention', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'histofed-bag-model-'));
    const spec = bagSpec('transformer-mil', { denseUnits: 8, heads: 2 }, true);
    const model = buildModel(spec, 4);
    try {
      const fields = { classes: ['benign', 'malignant'], subtypeClasses: ['a', 'b', 'c', 'd'], spec, provenance: { kind: 'global' as const } };
      await saveModel(root, model, fields);
      const loaded = await loadModel(root);
      try {
        const { data } = signalBags(4, 3);
        expect(Array.from(predictProbabilities(loaded.model, data.images, 4, [8, SLOT]))).toEqual(Array.from(predictProbabilities(model, data.images, 4, [8, SLOT])));
        expect(Array.from(tileAttention(loaded.model, data.images, 4))).toEqual(Array.from(tileAttention(model, data.images, 4)));
        expect(loaded.manifest.spec.kind).toBe('transformer-mil');
      } finally {
        loaded.model.dispose();
      }
    } finally {
      model.dispose();
      await rm(root, { recursive: true, force: true });
    }
  });

  it('refuses bad specs, naming the field', () => {
    expect(() => validateModelSpec(bagSpec('attention-mil', { heads: 2 }))).toThrow(/model.options.heads: unknown option for attention-mil/);
    expect(() => validateModelSpec(bagSpec('transformer-mil', { denseUnits: 10, heads: 4 }))).toThrow(/multiple of options.heads/);
    expect(() => validateModelSpec(bagSpec('attention-mil', { bagTiles: 0 }))).toThrow(/model.options.bagTiles/);
    expect(() => validateModelSpec({ ...bagSpec('attention-mil'), backbone: undefined })).toThrow(/kind attention-mil needs a backbone/);
    const spec = bagSpec('attention-mil');
    expect(() => validateModelSpec({ ...spec, backbone: { ...(spec.backbone as NonNullable<ModelSpec['backbone']>), trainFrom: 'block_1_expand' } })).toThrow(ValidationError);
    const plain = buildModel({ kind: 'small-cnn', imageSize: 16, numClasses: 2 });
    try {
      expect(isBagLayersModel(plain)).toBe(false);
      expect(() => tileAttention(plain, new Float32Array(0), 0)).toThrow(/does not weigh tiles/);
    } finally {
      plain.dispose();
    }
  });
});
