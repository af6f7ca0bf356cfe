import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { mulberry32 } from '../random';
import { getWeights } from '../weights-bridge';
import { buildContrastiveModel, contrastiveStep, disposeContrastiveModel } from './contrastive-model';

const spec: ModelSpec = { kind: 'se-cnn', imageSize: 16, numClasses: 2 };

/** n tiles of two kinds of stripes at random phases; view b is view a shifted and brightened a little. */
function pairs(n: number, seed: number): { a: tf.Tensor4D; b: tf.Tensor4D } {
  const rand = mulberry32(seed);
  const a = new Float32Array(n * 16 * 16 * 3);
  const b = new Float32Array(a.length);
  for (let i = 0; i < n; i++) {
    const period = 2 + (i % 4);
    const phase = Math.floor(rand() * period);
    const colour = [rand(), rand(), rand()];
    for (let y = 0; y < 16; y++) {
      for (let x = 0; x < 16; x++) {
        const on = Math.floor((x + phase) / period) % 2;
        for (let c = 0; c < 3; c++) {
          const v = on ? colour[c] : 1 - colour[c];
          a[((i * 16 + y) * 16 + x) * 3 + c] = v;
          const onB = Math.floor((x + phase + 1) / period) % 2;
          b[((i * 16 + y) * 16 + x) * 3 + c] = Math.min(1, (onB ? colour[c] : 1 - colour[c]) * 1.05);
        }
      }
    }
  }
  return { a: tf.tensor4d(a, [n, 16, 16, 3]), b: tf.tensor4d(b, [n, 16, 16, 3]) };
}

describe('contrastive pretraining model', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });

  it("trains the classifier's own conv layers on NT-Xent (the loss falls), which a classification run then starts from", () => {
    const model = buildContrastiveModel(spec, 3, 16, 32);
    const { a, b } = pairs(16, 1);
    const before = getWeights(model.classifier);
    const optimizer = tf.train.adam(0.01);
    const tensors = tf.memory().numTensors;
    try {
      const first = contrastiveStep(model, optimizer, a, b, 0.5);
      let last = first;
      for (let i = 0; i < 25; i++) last = contrastiveStep(model, optimizer, a, b, 0.5);
      expect(last).toBeLessThan(first);
      expect(tf.memory().numTensors).toBeLessThanOrEqual(tensors + 2 * model.projector.trainableWeights.length + 2);
      const after = getWeights(model.classifier);
      const moved = (name: string) => {
        const x = before.find((t) => t.name === name)!.values;
        const y = after.find((t) => t.name === name)!.values;
        return x.some((v, i) => v !== y[i]);
      };
      // The encoder moved (conv, SE); the classification heads did not (they are not on the path).
      expect(moved('conv1/kernel')).toBe(true);
      expect(moved('se3_expand/kernel')).toBe(true);
      expect(moved('head/kernel')).toBe(false);
      expect(after.map((t) => t.name)).toEqual(before.map((t) => t.name));
    } finally {
      tf.dispose([a, b]);
      optimizer.dispose();
      disposeContrastiveModel(model);
    }
  });

  it('refuses a backbone model', () => {
    expect(() =>
      buildContrastiveModel({ ...spec, kind: 'backbone-head', imageSize: 224, backbone: { name: 'mobilenet-v2-imagenet', cut: 'x', input: 'signed', features: 8 }, tiles: { scale: 1, views: 0 } }),
    ).toThrow(/contrastive pretraining of a backbone model is not built/);
  });
});
