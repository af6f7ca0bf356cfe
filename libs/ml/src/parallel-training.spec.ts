import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';
import type { LabeledImages, ModelSpec, WeightSet } from '@histofed/fl-core';
import { ValidationError, l2Distance } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { DEFAULT_BACKBONE } from '@histofed/fl-core';
import { resolveBackbone, tileFeatureExtractor } from './backbones/backbone';
import { buildModel } from './models';
import { TrainingPool, createTrainingPool, shareImages, trainLocalParallel } from './parallel-training';
import { brightDarkImages } from './testing/synthetic';
import { trainLocal } from './train';
import type { TrainOptions, TrainProgress } from './train';
import { getWeights, setWeights } from './weights-bridge';

const spec: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { dropout: 0 } };
const data = brightDarkImages(48, 16, 5);
const base: TrainOptions = { epochs: 2, batchSize: 12, learningRate: 0.003, proximalMu: 0, seed: 3 };

let pool: TrainingPool;
let initial: WeightSet;

function maxAbsDiff(a: WeightSet, b: WeightSet): number {
  let worst = 0;
  a.forEach((t, i) => {
    expect(t.name).toBe(b[i].name);
    t.values.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - b[i].values[j]))));
  });
  return worst;
}

/** trainLocal on the main thread from `initial`: the reference. */
async function reference(s: ModelSpec, d: LabeledImages, opts: TrainOptions) {
  const m = buildModel(s, 1);
  setWeights(m, initial);
  const losses: number[] = [];
  const r = await trainLocal(m, d, { ...opts, onProgress: (p) => losses.push(p.loss) });
  const weights = getWeights(m);
  m.dispose();
  return { ...r, losses, weights };
}

async function parallel(d: LabeledImages, opts: TrainOptions, s: ModelSpec = spec) {
  const progress: TrainProgress[] = [];
  const r = await pool.train(s, initial, d, { ...opts, onProgress: (p) => progress.push(p) });
  return { ...r, progress, losses: progress.map((p) => p.loss) };
}

async function expectReplicasIdentical(): Promise<void> {
  const [a, ...others] = await pool.replicaWeights();
  for (const o of others) expect(maxAbsDiff(a, o)).toBe(0);
}

beforeAll(async () => {
  await selectBackend('wasm');
  const m = buildModel(spec, 3);
  initial = getWeights(m);
  m.dispose();
  pool = await createTrainingPool({ workers: 2, backend: 'wasm' });
}, 30_000);

afterAll(async () => {
  await pool.close();
});

describe('training pool (2 workers) against single-thread trainLocal', () => {
  it('reaches the same weights and losses from the same initial weights, seed and data', async () => {
    expect(pool.backend?.name).toBe('wasm');
    const ref = await reference(spec, data, base);
    const par = await parallel(data, base);
    expect(par.progress).toHaveLength(2 * 4);
    expect(par.progress[0]).toMatchObject({ epoch: 1, epochs: 2, batch: 1, batches: 4 });
    par.losses.forEach((l, i) => expect(Math.abs(l - ref.losses[i])).toBeLessThan(1e-5));
    expect(par.loss).toBeCloseTo(ref.loss, 5);
    expect(par.samples).toBe(48);
    expect(par.epochs).toBe(2);
    expect(maxAbsDiff(par.weights, ref.weights)).toBeLessThan(1e-4);
    expect(maxAbsDiff(par.weights, initial)).toBeGreaterThan(1e-3); // training moved the weights
    await expectReplicasIdentical();
  });

  it('with class weights, a batch the workers split unevenly, and a last batch smaller than the worker count', async () => {
    // 25 images, batch 7: shards of 3 and 4, and a last batch of 4; batch 8: a last batch of 1 image.
    const odd = brightDarkImages(25, 16, 8);
    for (const opts of [
      { ...base, batchSize: 7, classWeights: [1, 2.5] },
      { ...base, batchSize: 8 },
    ]) {
      const ref = await reference(spec, odd, opts);
      const par = await parallel(odd, opts);
      expect(par.progress).toHaveLength(2 * Math.ceil(25 / opts.batchSize));
      par.losses.forEach((l, i) => expect(Math.abs(l - ref.losses[i])).toBeLessThan(1e-5));
      expect(maxAbsDiff(par.weights, ref.weights)).toBeLessThan(1e-4);
    }
    await expectReplicasIdentical();
  });

  it('carries per-row sample weights with the task: each weight follows its row through the shuffle and the shards', async () => {
    const odd = brightDarkImages(25, 16, 8);
    const sampleWeights = Float32Array.from({ length: 25 }, (_, i) => (i % 4 === 0 ? 0 : 0.5 + (i % 5) / 2));
    const opts = { ...base, batchSize: 7, classWeights: [1, 2.5], sampleWeights };
    const ref = await reference(spec, odd, opts);
    const par = await parallel(odd, opts);
    par.losses.forEach((l, i) => expect(Math.abs(l - ref.losses[i])).toBeLessThan(1e-5));
    expect(maxAbsDiff(par.weights, ref.weights)).toBeLessThan(1e-4);
    const unweighted = await parallel(odd, { ...opts, sampleWeights: undefined });
    expect(maxAbsDiff(par.weights, unweighted.weights)).toBeGreaterThan(1e-3); // the weights did matter
    await expect(pool.train(spec, initial, odd, { ...opts, sampleWeights: new Float32Array(24).fill(1) })).rejects.toThrow(
      /sampleWeights: expected one weight per training row \(25\), got 24/,
    );
  });

  it('applies FedProx like trainLocal, and a large mu keeps the weights close to the global ones', async () => {
    const globalWeights = initial;
    const prox = { ...base, epochs: 3, proximalMu: 1, globalWeights };
    const ref = await reference(spec, data, prox);
    const par = await parallel(data, prox);
    expect(maxAbsDiff(par.weights, ref.weights)).toBeLessThan(1e-4);

    const free = l2Distance((await parallel(data, { ...base, epochs: 3 })).weights, globalWeights);
    const tight = l2Distance((await parallel(data, { ...base, epochs: 3, proximalMu: 50, globalWeights })).weights, globalWeights);
    expect(free).toBeGreaterThan(0.05);
    expect(tight).toBeLessThan(free * 0.3);
  });

  it('trains with batch norm and dropout; the averaged moving statistics agree across replicas', async () => {
    const bn: ModelSpec = { ...spec, options: { batchNorm: 1, dropout: 0.25 } };
    const m = buildModel(bn, 2);
    const bnInitial = getWeights(m);
    m.dispose();
    const r = await pool.train(bn, bnInitial, data, { ...base, epochs: 3 });
    const mean = r.weights.find((t) => t.name === 'bn1/moving_mean');
    expect(mean?.values.some((v) => v !== 0)).toBe(true);
    expect(r.loss).toBeLessThan(0.69);
    await expectReplicasIdentical();
  });

  it('keeps tf.memory() in the workers flat across calls (batch norm, FedProx, class weights)', async () => {
    const bn: ModelSpec = { ...spec, options: { batchNorm: 1 } };
    const m = buildModel(bn, 2);
    const w = getWeights(m);
    m.dispose();
    const opts: TrainOptions = { ...base, batchSize: 4, proximalMu: 0.1, globalWeights: w, classWeights: [1, 2] };
    await pool.train(bn, w, data, { ...opts, epochs: 1 }); // warm-up: the replicas are rebuilt for this spec
    const before = await pool.workerMemory();
    let steps = 0;
    await pool.train(bn, w, data, { ...opts, onProgress: () => steps++ });
    const after = await pool.workerMemory();
    expect(steps).toBe(24);
    after.forEach((a, i) => {
      expect(a.numTensors).toBe(before[i].numTensors);
      expect(a.numDataBuffers).toBe(before[i].numDataBuffers);
    });
  });

  it('lets the main thread run between steps', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    let steps = 0;
    try {
      await pool.train(spec, initial, shareImages(data), { ...base, batchSize: 6, onProgress: () => steps++ });
    } finally {
      clearInterval(timer);
    }
    expect(steps).toBe(16);
    expect(ticks).toBeGreaterThanOrEqual(steps);
  });
});

describe('training pool errors', () => {
  it('rejects bad inputs before any work, naming the field (NaN images, options, labels)', async () => {
    const per = 16 * 16 * 3;
    const bad: LabeledImages = { ...data, images: data.images.map((v, i) => (i === 5 * per + 7 ? NaN : v)) };
    await expect(pool.train(spec, initial, bad, base)).rejects.toThrow(/data.images: image 5 holds a non-finite value/);
    await expect(trainLocalParallel(spec, initial, bad, { ...base, workers: 2 })).rejects.toThrow(/image 5/);
    await expect(pool.train(spec, initial, data, { ...base, batchSize: 0 })).rejects.toBeInstanceOf(ValidationError);
    await expect(pool.train(spec, initial, { ...data, imageSize: 24 }, base)).rejects.toThrow(/data.imageSize/);
    await expect(createTrainingPool({ workers: 0 })).rejects.toThrow(/workers/);
  });

  it("rejects naming the worker when a worker's step fails (wrong initial weights), and stays usable", async () => {
    await expect(pool.train(spec, initial.slice(1), data, base)).rejects.toMatchObject({
      code: 'WEIGHT_LAYOUT',
      worker: expect.any(Number),
      message: expect.stringMatching(/^training worker \d \(thread \d+\) failed: setWeights: /),
    });
    const r = await pool.train(spec, initial, data, { ...base, epochs: 1 });
    expect(r.samples).toBe(48);
  });

  it('reports divergence and abort like trainLocal', async () => {
    const nan = initial.map((t) => (t.name === 'head/bias' ? { ...t, values: Float32Array.from([NaN, 0]) } : t));
    await expect(pool.train(spec, nan, data, { ...base, epochs: 1 })).rejects.toMatchObject({
      code: 'TRAINING_DIVERGED',
      message: expect.stringMatching(/training diverged: (the loss is NaN|weight "[^"]+" is not finite) .*epoch 1/),
    });
    const ac = new AbortController();
    await expect(
      pool.train(spec, initial, data, { ...base, signal: ac.signal, onProgress: (p) => p.batch === 2 && ac.abort() }),
    ).rejects.toMatchObject({ code: 'ABORTED', message: 'training aborted in epoch 1, batch 3' });
  });

  it('rejects naming the worker when its thread exits mid-training; the next call restarts it', async () => {
    const threads = (pool as unknown as { workers: { worker: import('node:worker_threads').Worker }[] }).workers;
    await expect(
      pool.train(spec, initial, data, { ...base, onProgress: (p) => void (p.batch === 2 && threads[1].worker.terminate()) }),
    ).rejects.toMatchObject({ code: 'WORKER_EXITED', worker: 1, message: expect.stringMatching(/^training worker 1 .*exited/) });
    const r = await pool.train(spec, initial, data, { ...base, epochs: 1 });
    expect(r.samples).toBe(48);
    await expectReplicasIdentical();
  }, 20_000);
});

describe('training pool lifecycle', () => {
  it('close() terminates the threads; a call in progress or after rejects', async () => {
    const p = await createTrainingPool({ workers: 2, backend: 'wasm' });
    const handles = (p as unknown as { workers: { exited: boolean; worker: import('node:worker_threads').Worker }[] }).workers;
    const refd = () => process.getActiveResourcesInfo().filter((r) => r === 'MessagePort').length;
    let closed: Promise<void> | undefined;
    let refdWhileTraining = 0;
    const running = p.train(spec, initial, data, {
      ...base,
      epochs: 5,
      onProgress: () => {
        refdWhileTraining = refd();
        closed ??= p.close();
      },
    });
    await expect(running).rejects.toMatchObject({ code: 'POOL_CLOSED', message: expect.stringMatching(/pool was closed/) });
    await closed;
    expect(refdWhileTraining).toBe(2); // both threads keep the process alive while training ...
    expect(handles.map((h) => [h.exited, h.worker.threadId])).toEqual([
      [true, -1],
      [true, -1],
    ]);
    expect(refd()).toBe(0); // ... and nothing is left afterwards (the shared pool is idle, hence unref'd)
    await expect(p.train(spec, initial, data, base)).rejects.toMatchObject({ code: 'POOL_CLOSED' });
    await p.close(); // idempotent
  }, 20_000);

  it('fails to start naming the worker when its backend cannot be loaded', async () => {
    try {
      require.resolve('@tensorflow/tfjs-node');
      return; // installed here: nothing to provoke
    } catch {
      // not installed: the worker's selectBackend fails
    }
    await expect(createTrainingPool({ workers: 1, backend: 'tensorflow' })).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: expect.stringMatching(/^training worker 0 \(thread \d+\) failed: backend tensorflow: @tensorflow\/tfjs-node is not installed/),
    });
  }, 20_000);

  it('an idle pool does not keep the process alive', () => {
    const script = `
      require(${JSON.stringify(require.resolve('ts-node'))}).register({ transpileOnly: true, projectSearchDir: ${JSON.stringify(__dirname)} });
      const ml = require(${JSON.stringify(require.resolve('./index'))});
      ml.createTrainingPool({ workers: 2, backend: 'wasm' }).then((p) => process.stdout.write('started ' + p.size + '\\n'));
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 25_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('started 2');
    expect(r.status).toBe(0);
  }, 30_000);

  it('main-thread tensors are untouched by parallel training', async () => {
    const before = tf.memory().numTensors;
    await pool.train(spec, initial, data, { ...base, epochs: 1 });
    expect(tf.memory().numTensors).toBe(before);
  });

  it('extracts a frozen backbone\u2019s tile features on its workers, equal to this thread\u2019s, and trains heads on them', async () => {
    const backbone = (await resolveBackbone(DEFAULT_BACKBONE, {}, 48)).spec;
    const local = await tileFeatureExtractor(backbone, 48);
    const remote = await pool.featureExtractor(backbone, 48);
    expect(remote.id).toBe(local.id);
    expect(remote.rowShape).toEqual([384]);
    const tiles = Float32Array.from({ length: 5 * 48 * 48 * 3 }, (_, i) => (Math.cos(i * 0.07) + 1) / 2);
    const [a, b] = await Promise.all([remote.extract(tiles, 5, 48), remote.extract(tiles.slice(0, 2 * 48 * 48 * 3), 2, 48)]);
    const expected = await local.extract(tiles, 5, 48);
    a.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 4));
    b.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 4));
    expect(tiles[0]).toBe((Math.cos(0) + 1) / 2); // the caller's tiles are not transferred away
    // Heads on those features train on the pool like any model, and match the main thread.
    const headSpec: ModelSpec = { kind: 'backbone-head', imageSize: 48, numClasses: 2, backbone, tiles: { scale: 1, views: 0 }, options: { dropout: 0 } };
    const rows: LabeledImages = shareImages({ images: a, count: 5, imageSize: 48, sampleShape: [384], labels: Int32Array.from([0, 1, 0, 1, 1]) });
    const m = buildModel(headSpec, 2);
    const start = getWeights(m);
    const opts = { ...base, batchSize: 5 };
    const parallel = await pool.train(headSpec, start, rows, opts);
    await trainLocal(m, rows, opts);
    expect(maxAbsDiff(parallel.weights, getWeights(m))).toBeLessThan(1e-5);
    m.dispose();
  }, 60_000);
});
