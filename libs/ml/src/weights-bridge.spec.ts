import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec, NamedTensor } from '@histofed/fl-core';
import { WeightLayoutError, cloneWeights } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { buildModel } from './models';
import { getWeights, setWeights } from './weights-bridge';

const spec: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 3, options: { batchNorm: 1 } };

function predict(m: ReturnType<typeof buildModel>): Float32Array {
  return tf.tidy(() => (m.predict(tf.fill([2, 16, 16, 3], 0.3)) as tf.Tensor).dataSync() as Float32Array);
}

describe.each(['wasm', 'cpu'] as const)('weights bridge on %s', (backend) => {
  beforeAll(async () => {
    await selectBackend(backend);
  });

  it('round-trips every weight, including batch-norm statistics', () => {
    const a = buildModel(spec, 1);
    const b = buildModel(spec, 2);
    const wa = getWeights(a);
    // make the non-trainable statistics non-trivial, so that copying them is visible
    const modified = wa.map((t) =>
      t.name.endsWith('moving_mean') ? { ...t, values: t.values.map((_, i) => i * 0.01) } : t,
    );
    setWeights(a, modified);
    setWeights(b, getWeights(a));
    expect(getWeights(b)).toEqual(getWeights(a));
    expect(getWeights(b).find((t) => t.name === 'bn2/moving_mean')?.values[3]).toBeCloseTo(0.03, 6);
    expect(predict(b)).toEqual(predict(a));
    a.dispose();
    b.dispose();
  });

  it('copies values in both directions (no aliasing of the caller\'s arrays)', () => {
    const m = buildModel(spec, 1);
    const w = cloneWeights(getWeights(m));
    setWeights(m, w);
    const before = getWeights(m);
    w[0].values.fill(123); // the caller reuses its array after setWeights
    before[1].values.fill(456); // and modifies what getWeights returned
    expect(getWeights(m)[0].values[0]).not.toBe(123);
    expect(getWeights(m)[1].values[0]).not.toBe(456);
    m.dispose();
  });

  it('throws naming the tensor when a shape differs, and leaves the model unchanged', () => {
    const m = buildModel(spec, 1);
    const good = getWeights(m);
    const bad: NamedTensor[] = good.map((t) =>
      t.name === 'conv2/kernel' ? { name: t.name, shape: [3, 3, 16, 31], values: new Float32Array(3 * 3 * 16 * 31) } : t,
    );
    expect(() => setWeights(m, bad)).toThrow(WeightLayoutError);
    expect(() => setWeights(m, bad)).toThrow(/"conv2\/kernel".*\[3, 3, 16, 32\].*\[3, 3, 16, 31\]/);
    expect(getWeights(m)).toEqual(good);
    const renamed = good.map((t, i) => (i === 4 ? { ...t, name: 'conv9/kernel' } : t));
    expect(() => setWeights(m, renamed)).toThrow(/conv9\/kernel/);
    expect(() => setWeights(m, good.slice(1))).toThrow(WeightLayoutError);
    const short = good.map((t) => (t.name === 'conv2/kernel' ? { ...t, values: t.values.subarray(1) } : t));
    expect(() => setWeights(m, short)).toThrow(/"conv2\/kernel" has 4607 values/);
    expect(getWeights(m)).toEqual(good);
    m.dispose();
  });

  it('creates no lasting tensors', () => {
    const m = buildModel(spec, 1);
    const w = getWeights(m);
    setWeights(m, w);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) setWeights(m, getWeights(m));
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });
});
