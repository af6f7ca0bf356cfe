import * as tf from '@tensorflow/tfjs-core';
import type { LabeledImages, ModelSpec } from '@histofed/fl-core';
import { ValidationError, cloneWeights, l2Distance } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { evaluateModel } from './evaluate';
import { buildModel } from './models';
import { brightDarkImages, twoStageImages } from './testing/synthetic';
import { predictProbabilities } from './evaluate';
import { balancedClassWeights } from './losses';
import { trainLocal } from './train';
import type { TrainOptions, TrainProgress } from './train';
import { getWeights, setWeights } from './weights-bridge';

const spec: ModelSpec = { kind: 'small-cnn', imageSize: 24, numClasses: 2 };
const data = brightDarkImages(64, 24, 7);
const base: TrainOptions = { epochs: 4, batchSize: 16, learningRate: 0.005, proximalMu: 0, seed: 3 };

beforeAll(async () => {
  await selectBackend('wasm');
});

describe('trainLocal on wasm', () => {
  it('learns an easy two-class problem and lowers the loss', async () => {
    // No dropout: its masks are not seeded, and this test must not depend on luck.
    const model = buildModel({ ...spec, options: { dropout: 0 } }, 1);
    const before = evaluateModel(model, data).metrics;
    const progress: TrainProgress[] = [];
    const result = await trainLocal(model, data, { ...base, epochs: 5, onProgress: (p) => progress.push(p) });
    const after = evaluateModel(model, data).metrics;

    expect(result.samples).toBe(64);
    expect(result.epochs).toBe(5);
    expect(after['accuracy']).toBeGreaterThanOrEqual(0.95);
    expect(after['loss']).toBeLessThan(before['loss'] * 0.5);
    expect(progress).toHaveLength(5 * 4);
    expect(progress[0]).toMatchObject({ epoch: 1, epochs: 5, batch: 1, batches: 4 });
    expect(progress[19]).toMatchObject({ epoch: 5, batch: 4 });
    const firstEpoch = progress.slice(0, 4).reduce((s, p) => s + p.loss, 0) / 4;
    expect(result.loss).toBeLessThan(firstEpoch);
    // the result's loss is the mean of the last epoch's batch losses
    expect(result.loss).toBeCloseTo(progress.slice(16).reduce((s, p) => s + p.loss, 0) / 4, 5);
    model.dispose();
  });

  // Deterministic (no dropout, seeded shuffle and initialisation); the spatial attention learns the colour cue more slowly.
  it.each([
    ['se-cnn', 0.85],
    ['attention-cnn', 0.6],
  ])('trains a two-stage %s: both heads learn (wasm kernels for SE and attention)', async (kind, subtypeAccuracy) => {
    const twoStage = twoStageImages(64, 24, 11);
    const model = buildModel({ kind: kind as string, imageSize: 24, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { dropout: 0 } }, 2);
    const result = await trainLocal(model, twoStage, {
      ...base,
      epochs: 20,
      learningRate: 0.01,
      classWeights: balancedClassWeights(twoStage.labels, 2),
      subtypeWeights: balancedClassWeights(twoStage.subtypes as Int32Array, 4),
    });
    expect(Number.isFinite(result.loss)).toBe(true);
    const p = predictProbabilities(model, twoStage.images, twoStage.count, 24);
    let stage1 = 0;
    let subtype = 0;
    for (let i = 0; i < twoStage.count; i++) {
      const row = Array.from(p.subarray(i * 6, i * 6 + 6));
      if ((row[1] > row[0] ? 1 : 0) === twoStage.labels[i]) stage1++;
      const sub = row.slice(2);
      if (sub.indexOf(Math.max(...sub)) === (twoStage.subtypes as Int32Array)[i]) subtype++;
    }
    expect(stage1 / twoStage.count).toBeGreaterThanOrEqual(0.95);
    expect(subtype / twoStage.count).toBeGreaterThanOrEqual(subtypeAccuracy as number); // 4 subtypes: chance is 0.25
    model.dispose();
  }, 60_000);

  it('a two-stage model refuses data without subtypes, naming the field', async () => {
    const model = buildModel({ ...spec, subtypeParents: [0, 1] }, 1);
    await expect(trainLocal(model, data, base)).rejects.toThrow('data.subtypes');
    model.dispose();
  });

  it('is deterministic for a given seed (no dropout) and shuffles differently for another seed', async () => {
    const s: ModelSpec = { ...spec, options: { dropout: 0 } };
    const run = async (seed: number) => {
      const m = buildModel(s, 1);
      await trainLocal(m, data, { ...base, epochs: 2, seed });
      const w = getWeights(m);
      m.dispose();
      return w;
    };
    const a = await run(3);
    const b = await run(3);
    const c = await run(4);
    expect(l2Distance(a, b)).toBe(0);
    expect(l2Distance(a, c)).toBeGreaterThan(0);
  });

  it('with a large FedProx mu stays much closer to the global weights than with mu = 0', async () => {
    const global = getWeights(buildModel(spec, 5));
    const distance = async (proximalMu: number) => {
      const m = buildModel(spec, 5);
      await trainLocal(m, data, { ...base, epochs: 3, proximalMu, globalWeights: global });
      const d = l2Distance(getWeights(m), global);
      m.dispose();
      return d;
    };
    const free = await distance(0);
    const prox = await distance(50);
    expect(free).toBeGreaterThan(0.1);
    expect(prox).toBeLessThan(free * 0.3);
  });

  it('keeps tf.memory().numTensors flat over 30+ steps (batch norm, FedProx, class weights)', async () => {
    const m = buildModel({ ...spec, options: { batchNorm: 1 } }, 1);
    const opts: TrainOptions = {
      ...base,
      epochs: 2,
      batchSize: 4,
      proximalMu: 0.1,
      globalWeights: getWeights(m),
      classWeights: [1, 2],
    };
    await trainLocal(m, data, { ...opts, epochs: 1 }); // warm-up
    const before = tf.memory();
    let steps = 0;
    await trainLocal(m, data, { ...opts, onProgress: () => steps++ });
    const after = tf.memory();
    expect(steps).toBeGreaterThanOrEqual(30);
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    // moving statistics were updated by training-mode batch norm
    const mean = getWeights(m).find((t) => t.name === 'bn1/moving_mean');
    expect(mean?.values.some((v) => v !== 0)).toBe(true);
    m.dispose();
  });

  it('lets the event loop run between mini-batches (socket heartbeats)', async () => {
    const m = buildModel(spec, 1);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    let batches = 0;
    try {
      await trainLocal(m, data, { ...base, epochs: 2, batchSize: 8, onProgress: () => batches++ });
    } finally {
      clearInterval(timer);
    }
    expect(batches).toBe(16);
    expect(ticks).toBeGreaterThanOrEqual(batches / 2);
    m.dispose();
  });

  it('stops when aborted, disposing everything', async () => {
    const m = buildModel(spec, 1);
    await trainLocal(m, data, { ...base, epochs: 1 });
    const before = tf.memory().numTensors;
    const ac = new AbortController();
    await expect(
      trainLocal(m, data, { ...base, signal: ac.signal, onProgress: (p) => p.batch === 2 && ac.abort() }),
    ).rejects.toMatchObject({ code: 'ABORTED' });
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });

  it('reports a diverging loss instead of returning NaN weights', async () => {
    const m = buildModel(spec, 1);
    setWeights(
      m,
      getWeights(m).map((t) => (t.name === 'head/bias' ? { ...t, values: Float32Array.from([NaN, 0]) } : t)),
    );
    await expect(trainLocal(m, data, { ...base, epochs: 1 })).rejects.toMatchObject({
      code: 'TRAINING_DIVERGED',
      // wasm's clip maps NaN probabilities into range, so the per-epoch weight check may be what fires
      message: expect.stringMatching(/training diverged: (the loss is NaN|weight "[^"]+" is not finite) .*epoch 1/),
    });
    m.dispose();
  });

  it('rejects images holding NaN, naming the image', async () => {
    const m = buildModel(spec, 1);
    const per = 24 * 24 * 3;
    const bad: LabeledImages = { ...data, images: data.images.map((v, i) => (i === 5 * per + 7 ? NaN : v)) };
    await expect(trainLocal(m, bad, base)).rejects.toThrow(/data.images: image 5 holds a non-finite value/);
    m.dispose();
  });

  it('rejects inconsistent inputs before training, naming the field', async () => {
    const m = buildModel(spec, 1);
    const w = cloneWeights(getWeights(m));
    const before = tf.memory().numTensors;
    const reject = (d: LabeledImages, o: Partial<TrainOptions>, msg: RegExp) =>
      expect(trainLocal(m, d, { ...base, ...o })).rejects.toThrow(msg);
    await reject({ ...data, imageSize: 32 }, {}, /data.imageSize/);
    await reject({ ...data, labels: data.labels.map((l, i) => (i === 3 ? 2 : l)) }, {}, /data.labels\[3\]/);
    await reject({ ...data, images: data.images.subarray(1) }, {}, /data.images/);
    await reject(data, { classWeights: [1] }, /classWeights/);
    await reject(data, { epochs: 0 }, /epochs/);
    await reject(data, { learningRate: -1 }, /learningRate/);
    await reject(data, { proximalMu: 1, globalWeights: w.slice(1) }, /globalWeights/);
    await expect(trainLocal(m, data, { ...base, batchSize: 0 })).rejects.toBeInstanceOf(ValidationError);
    expect(getWeights(m)).toEqual(w);
    expect(tf.memory().numTensors).toBe(before);
    setWeights(m, w);
    m.dispose();
  });
});
