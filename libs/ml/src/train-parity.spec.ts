import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from './backend';
import { buildModel } from './models';
import { trainLocal } from './train';
import { brightDarkImages, twoStageImages } from './testing/synthetic';
import { isTwoStage, type ModelSpec } from '@histofed/fl-core';
import { getWeights } from './weights-bridge';

const specs: ModelSpec[] = [
  { kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { dropout: 0 } },
  { kind: 'se-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { dropout: 0 } },
  { kind: 'attention-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { dropout: 0 } },
];

async function trainOn(backend: 'cpu' | 'wasm', spec: ModelSpec) {
  await selectBackend(backend);
  const model = buildModel(spec, 11);
  const losses: number[] = [];
  const data = isTwoStage(spec) ? twoStageImages(16, 16, 5) : brightDarkImages(16, 16, 5);
  const r = await trainLocal(model, data, {
    epochs: 1,
    batchSize: 8,
    learningRate: 0.003,
    proximalMu: 0,
    seed: 3,
    onProgress: (p) => losses.push(p.loss),
  });
  const weights = getWeights(model);
  model.dispose();
  return { loss: r.loss, losses, weights };
}

describe('training on wasm (with HistoFed kernels) against the cpu backend', () => {
  it.each(specs)('reaches the same losses and weights from the same initial weights: $kind', async (spec) => {
    const cpu = await trainOn('cpu', spec);
    const wasm = await trainOn('wasm', spec);
    expect(wasm.losses).toHaveLength(2);
    wasm.losses.forEach((l, i) => expect(Math.abs(l - cpu.losses[i])).toBeLessThan(1e-3 * Math.max(1, Math.abs(cpu.losses[i]))));
    expect(Math.abs(wasm.loss - cpu.loss)).toBeLessThan(1e-3);
    let worst = 0;
    wasm.weights.forEach((t, i) => t.values.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - cpu.weights[i].values[j])))));
    expect(worst).toBeLessThan(1e-3);
    // Training moved the weights: the comparison is not between two untouched models.
    await selectBackend('wasm');
    const fresh = buildModel(spec, 11);
    const initial = getWeights(fresh);
    fresh.dispose();
    expect(Math.max(...initial.map((t, i) => Math.max(...t.values.map((v, j) => Math.abs(v - wasm.weights[i].values[j])))))).toBeGreaterThan(1e-3);
  }, 120_000);
});

describe('memory over 200 training steps on wasm', () => {
  it('keeps tensors, data buffers and the wasm heap flat', async () => {
    await selectBackend('wasm');
    const model = buildModel({ kind: 'small-cnn', imageSize: 16, numClasses: 2 }, 2);
    const data = brightDarkImages(40, 16, 9);
    const globalWeights = getWeights(model);
    const opts = { epochs: 1, batchSize: 4, learningRate: 0.001, proximalMu: 0.1, globalWeights, seed: 1 };
    await trainLocal(model, data, opts); // warm-up: lazy state, heap growth
    const heap = () => (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.length;
    const before = { tensors: tf.memory().numTensors, buffers: tf.memory().numDataBuffers, heap: heap() };
    let steps = 0;
    await trainLocal(model, data, { ...opts, epochs: 20, onProgress: () => steps++ });
    expect(steps).toBe(200);
    expect(tf.memory().numTensors).toBe(before.tensors);
    expect(tf.memory().numDataBuffers).toBe(before.buffers);
    expect(heap()).toBe(before.heap);
    model.dispose();
  }, 60_000);
});
