import * as tf from '@tensorflow/tfjs-core';
import type { LabeledImages, ModelSpec, WeightSet } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { predictProbabilities } from './evaluate';
import { fit } from './fit';
import { EPSILON, balancedClassWeights } from './losses';
import { buildModel } from './models';
import { mulberry32 } from './random';
import { brightDarkImages, twoStageImages } from './testing/synthetic';
import { trainLocal, type TrainOptions } from './train';
import { getWeights, setWeights } from './weights-bridge';

// No dropout (unseeded masks), no batch norm (zero-weight rows would still shift batch statistics).
const twoStage: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { dropout: 0 } };
const base: TrainOptions = { epochs: 2, batchSize: 8, learningRate: 0.005, proximalMu: 0, seed: 4 };

beforeAll(async () => {
  await selectBackend('wasm');
});

function maxAbsDiff(a: WeightSet, b: WeightSet): number {
  let worst = 0;
  a.forEach((t, i) => t.values.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - b[i].values[j])))));
  return worst;
}

function randomWeights(n: number, seed: number, zeroEvery = 0): Float32Array {
  const rand = mulberry32(seed);
  return Float32Array.from({ length: n }, (_, i) => (zeroEvery > 0 && i % zeroEvery === 0 ? 0 : 0.25 + 2 * rand()));
}

/** Trains a fresh two-stage model (seed 1) on `data`; the trained weights and the batch losses. */
async function train(data: LabeledImages, opts: TrainOptions) {
  const m = buildModel(twoStage, 1);
  const losses: number[] = [];
  try {
    const r = await trainLocal(m, data, { ...opts, onProgress: (p) => losses.push(p.loss) });
    return { weights: getWeights(m), losses, loss: r.loss };
  } finally {
    m.dispose();
  }
}

describe('TrainOptions.sampleWeights', () => {
  it("the batch loss is the hand-computed mean of class weight x row weight x cross-entropy, in both heads", async () => {
    const data = twoStageImages(12, 16, 3);
    const classWeights = [1, 3];
    const subtypeWeights = [0.5, 1, 2, 1.5];
    const sampleWeights = randomWeights(12, 9, 5);
    const m = buildModel(twoStage, 1);
    const p = predictProbabilities(m, data.images, data.count, 16);
    let stage1 = 0;
    let stage2 = 0;
    const clip = (x: number) => Math.min(1 - EPSILON, Math.max(EPSILON, x));
    for (let i = 0; i < 12; i++) {
      const y = data.labels[i];
      const s = (data.subtypes as Int32Array)[i];
      stage1 += classWeights[y] * sampleWeights[i] * -Math.log(clip(p[i * 6 + y]));
      stage2 += subtypeWeights[s] * sampleWeights[i] * -Math.log(clip(p[i * 6 + 2 + s]));
    }
    const expected = stage1 / 12 + stage2 / 12;
    const losses: number[] = [];
    const opts: TrainOptions = { ...base, epochs: 1, batchSize: 12, classWeights, subtypeWeights, sampleWeights, onProgress: (x) => losses.push(x.loss) };
    await trainLocal(m, data, opts);
    expect(losses).toHaveLength(1);
    expect(losses[0]).toBeCloseTo(expected, 4);
    // and the weights matter: the unweighted loss of the same start is another number
    const plain = await train(data, { ...opts, epochs: 1, batchSize: 12, sampleWeights: undefined, onProgress: undefined });
    expect(Math.abs(plain.losses[0] - expected)).toBeGreaterThan(1e-3);
    // tensors stay disposed
    const before = tf.memory().numTensors;
    await trainLocal(m, data, { ...opts, epochs: 2, batchSize: 4 });
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });

  it('a row of weight 0 does not affect training: changing its image, label and subtype changes nothing', async () => {
    const data = twoStageImages(24, 16, 5);
    const sampleWeights = randomWeights(24, 2, 3); // rows 0, 3, 6, ... weigh 0
    const per = 16 * 16 * 3;
    const rand = mulberry32(17);
    const images = data.images.slice();
    const labels = data.labels.slice();
    const subtypes = (data.subtypes as Int32Array).slice();
    for (let i = 0; i < 24; i += 3) {
      for (let j = 0; j < per; j++) images[i * per + j] = rand();
      labels[i] = 1 - labels[i];
      subtypes[i] = (subtypes[i] + 2) % 4; // a subtype of the flipped class
    }
    const changed: LabeledImages = { ...data, images, labels, subtypes };
    const opts: TrainOptions = { ...base, classWeights: [1, 2], subtypeWeights: balancedClassWeights(data.subtypes as Int32Array, 4), sampleWeights };
    const a = await train(data, opts);
    const b = await train(changed, opts);
    expect(maxAbsDiff(a.weights, b.weights)).toBeLessThan(1e-6);
    a.losses.forEach((l, i) => expect(b.losses[i]).toBeCloseTo(l, 6));
    // Without the weights those rows do change training (the comparison is not vacuous).
    const c = await train(data, { ...opts, sampleWeights: undefined });
    const d = await train(changed, { ...opts, sampleWeights: undefined });
    expect(maxAbsDiff(c.weights, d.weights)).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(a.weights, c.weights)).toBeGreaterThan(1e-3);
  });

  it('weights of 1 train exactly as no weights; a common factor scales the loss', async () => {
    const data = twoStageImages(16, 16, 7);
    const plain = await train(data, base);
    const ones = await train(data, { ...base, sampleWeights: new Float32Array(16).fill(1) });
    expect(maxAbsDiff(plain.weights, ones.weights)).toBe(0);
    const doubled = await train(data, { ...base, epochs: 1, sampleWeights: new Float32Array(16).fill(2) });
    expect(doubled.losses[0]).toBeCloseTo(2 * plain.losses[0], 5);
  });

  it('refuses bad weights before training, with a clear message', async () => {
    const data = brightDarkImages(10, 16, 1);
    const m = buildModel({ kind: 'small-cnn', imageSize: 16, numClasses: 2 }, 1);
    const w = getWeights(m);
    const reject = (sampleWeights: unknown, msg: RegExp) =>
      expect(trainLocal(m, data, { ...base, sampleWeights: sampleWeights as Float32Array })).rejects.toThrow(msg);
    await reject(new Float32Array(9).fill(1), /sampleWeights: expected one weight per training row \(10\), got 9/);
    await reject(Float32Array.from({ length: 10 }, (_, i) => (i === 4 ? NaN : 1)), /sampleWeights\[4\]: must be a finite number >= 0, got NaN/);
    await reject(Float32Array.from({ length: 10 }, (_, i) => (i === 2 ? -1 : 1)), /sampleWeights\[2\]: must be a finite number >= 0, got -1/);
    await reject(Float32Array.from({ length: 10 }, (_, i) => (i === 7 ? Infinity : 1)), /sampleWeights\[7\]/);
    await reject(new Float32Array(10), /sampleWeights: every weight is 0/);
    await reject([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], /sampleWeights: must be a Float32Array/);
    await expect(trainLocal(m, data, { ...base, sampleWeights: new Float32Array(3) })).rejects.toBeInstanceOf(ValidationError);
    expect(getWeights(m)).toEqual(w);
    setWeights(m, w);
    m.dispose();
  });

  it('fit forwards them to every chunk', async () => {
    const data = brightDarkImages(10, 16, 1);
    const spec: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { dropout: 0 } };
    const m = buildModel(spec, 1);
    const initial = getWeights(m);
    m.dispose();
    await expect(fit({ spec, initial }, data, { ...base, maxEpochs: 1, sampleWeights: new Float32Array(4).fill(1) })).rejects.toThrow(/sampleWeights: expected one weight per training row \(10\), got 4/);
    const a = await fit({ spec, initial }, data, { ...base, maxEpochs: 2, sampleWeights: randomWeights(10, 3, 2) });
    const b = await fit({ spec, initial }, data, { ...base, maxEpochs: 2 });
    expect(maxAbsDiff(a.weights, b.weights)).toBeGreaterThan(1e-4);
  });
});
