import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../backend';
import { mulberry32 } from '../random';
import { getWeights } from '../weights-bridge';
import { adapterFeatures, buildFeatureAdapter, disposeFeatureAdapter, featureContrastiveStep } from './feature-adapter';

/** n images of d features; each view is the image's base vector plus independent noise. */
function views(n: number, d: number, seed: number): { a: tf.Tensor2D; b: tf.Tensor2D } {
  const rand = mulberry32(seed);
  const base = Array.from({ length: n }, () => Array.from({ length: d }, () => rand() * 2 - 1));
  const noisy = () => base.flatMap((row) => row.map((v) => v + 0.3 * (rand() - 0.5)));
  return { a: tf.tensor2d(noisy(), [n, d]), b: tf.tensor2d(noisy(), [n, d]) };
}

describe('feature-space contrastive adapter', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });

  it('trains the adapter and projection head on NT-Xent (the loss falls) without leaking tensors, with stable names', () => {
    const adapter = buildFeatureAdapter(12, 3, { units: [16, 8], hidden: 16, dim: 8 });
    expect(getWeights(adapter.encoder).map((t) => t.name)).toEqual(['adapter1/kernel', 'adapter1/bias', 'adapter2/kernel', 'adapter2/bias']);
    expect(getWeights(adapter.projector).map((t) => t.name)).toEqual([
      'adapter1/kernel',
      'adapter1/bias',
      'adapter2/kernel',
      'adapter2/bias',
      'proj1/kernel',
      'proj1/bias',
      'proj2/kernel',
      'proj2/bias',
    ]);
    const { a, b } = views(16, 12, 1);
    const optimizer = tf.train.adam(0.01);
    try {
      const before = getWeights(adapter.encoder)[0].values.slice();
      const first = featureContrastiveStep(adapter, optimizer, a, b, 0.5);
      const tensors = tf.memory().numTensors;
      let last = first;
      for (let i = 0; i < 40; i++) last = featureContrastiveStep(adapter, optimizer, a, b, 0.5);
      expect(last).toBeLessThan(first);
      expect(tf.memory().numTensors).toBe(tensors);
      expect(getWeights(adapter.encoder)[0].values.some((v, i) => v !== before[i])).toBe(true);
      const h = adapterFeatures(adapter, a.dataSync() as Float32Array, 16, 5);
      expect(h).toHaveLength(16 * 8);
      expect(h.every((v) => v >= 0 && Number.isFinite(v))).toBe(true); // ReLU representation
      expect(tf.memory().numTensors).toBe(tensors);
    } finally {
      tf.dispose([a, b]);
      optimizer.dispose();
      disposeFeatureAdapter(adapter);
    }
  });

  it('is deterministic for a seed and refuses bad shapes', () => {
    const x = buildFeatureAdapter(6, 2, { units: [4] });
    const y = buildFeatureAdapter(6, 2, { units: [4] });
    expect(getWeights(x.projector).map((t) => Array.from(t.values))).toEqual(getWeights(y.projector).map((t) => Array.from(t.values)));
    disposeFeatureAdapter(x);
    disposeFeatureAdapter(y);
    expect(() => buildFeatureAdapter(0)).toThrow(/inputDim/);
    expect(() => buildFeatureAdapter(4, 1, { units: [] })).toThrow(/units/);
    expect(() => buildFeatureAdapter(4, 1, { inputDropout: 1 })).toThrow(/inputDropout/);
  });
});
