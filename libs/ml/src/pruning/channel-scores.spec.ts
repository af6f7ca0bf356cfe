import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec, NamedTensor } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { buildModel } from '../models';
import { getWeights, setWeights } from '../weights-bridge';
import { BATCH_NORM_EPSILON, aggregateGateStatistics, rankChannels, seGateStatistics, weightNormScores } from './channel-scores';

const se: ModelSpec = { kind: 'se-cnn', imageSize: 24, numClasses: 2 };

function images(count: number, size = 24) {
  const values = tf.tidy(() => tf.randomUniform([count, size, size, 3], 0, 1, 'float32', 7).dataSync() as Float32Array);
  return { images: new Float32Array(values), count, imageSize: size };
}

function edit(weights: NamedTensor[], name: string, f: (v: Float32Array, shape: readonly number[]) => void): NamedTensor[] {
  return weights.map((t) => {
    if (t.name !== name) return t;
    const values = new Float32Array(t.values);
    f(values, t.shape);
    return { ...t, values };
  });
}

beforeAll(async () => {
  await selectBackend('wasm');
});

describe('seGateStatistics', () => {
  it('returns each block\'s mean gate per channel and the image count; a channel whose gate is forced low ranks last', () => {
    const model = buildModel(se, 2);
    setWeights(model, edit(getWeights(model), 'se2_expand/bias', (v) => (v[5] = -6)));
    const data = images(7);
    const s = seGateStatistics(model, se, data, { batchSize: 3 });
    expect(s.images).toBe(7);
    expect(s.gates.map((g) => g.length)).toEqual([16, 32, 64]);
    s.gates.flat().forEach((g) => expect(g).toBeGreaterThan(0));
    s.gates.flat().forEach((g) => expect(g).toBeLessThan(1));
    expect(rankChannels(s.gates[1])[0]).toBe(5);
    expect(s.gates[1][5]).toBeLessThan(0.05);
    // plain numbers, independent of the batching
    const whole = seGateStatistics(model, se, data, { batchSize: 32 });
    whole.gates.forEach((g, i) => g.forEach((x, c) => expect(x).toBeCloseTo(s.gates[i][c], 6)));
    expect(JSON.parse(JSON.stringify(s))).toEqual(s);
    // the model still predicts (the gate probe shares its layers and was not disposed)
    tf.tidy(() => expect((model.predict(tf.zeros([1, 24, 24, 3])) as tf.Tensor).shape).toEqual([1, 2]));
    model.dispose();
  });

  it('refuses a model without SE gates and an empty site', () => {
    const small = buildModel({ ...se, kind: 'small-cnn' }, 1);
    expect(() => seGateStatistics(small, { ...se, kind: 'small-cnn' }, images(1))).toThrow(/model.kind: small-cnn has no SE gates/);
    small.dispose();
    const model = buildModel(se, 1);
    expect(() => seGateStatistics(model, se, { images: new Float32Array(0), count: 0, imageSize: 24 })).toThrow(ValidationError);
    model.dispose();
  });
});

describe('aggregateGateStatistics', () => {
  it('is the image-weighted mean of the sites\' means (= the mean over all their images); empty sites do not count', () => {
    const a = { images: 1, gates: [[0.2, 0.4], [1]] };
    const b = { images: 3, gates: [[0.6, 0.0], [0.5]] };
    const empty = { images: 0, gates: [] };
    const r = aggregateGateStatistics([a, b, empty]);
    expect(r.images).toBe(4);
    expect(r.gates[0][0]).toBeCloseTo((0.2 + 3 * 0.6) / 4, 12);
    expect(r.gates[0][1]).toBeCloseTo(0.4 / 4, 12);
    expect(r.gates[1][0]).toBeCloseTo((1 + 1.5) / 4, 12);
    // order does not matter
    expect(aggregateGateStatistics([b, a]).gates).toEqual(r.gates);
  });

  it('equals the statistics of the pooled images', () => {
    const model = buildModel(se, 3);
    const all = images(5);
    const per = 24 * 24 * 3;
    const part = (from: number, to: number) => ({ images: all.images.slice(from * per, to * per), count: to - from, imageSize: 24 });
    const r = aggregateGateStatistics([seGateStatistics(model, se, part(0, 2)), seGateStatistics(model, se, part(2, 5))]);
    const pooled = seGateStatistics(model, se, all);
    r.gates.forEach((g, i) => g.forEach((x, c) => expect(x).toBeCloseTo(pooled.gates[i][c], 6)));
    model.dispose();
  });

  it('refuses reports of other shapes, bad counts and no images', () => {
    expect(() => aggregateGateStatistics([{ images: 1, gates: [[1, 2]] }, { images: 1, gates: [[1]] }])).toThrow(/reports\[1\]\.gates: blocks of \[1\] channels, expected \[2\]/);
    expect(() => aggregateGateStatistics([{ images: -1, gates: [[1]] }, { images: 1, gates: [[1]] }])).toThrow(/reports\[0\]\.images/);
    expect(() => aggregateGateStatistics([{ images: 1, gates: [[NaN]] }])).toThrow(/reports\[0\]\.gates\[0\]\[0\]/);
    expect(() => aggregateGateStatistics([])).toThrow(ValidationError);
  });
});

describe('weightNormScores', () => {
  it('is the L1 norm of each output filter; a zeroed filter ranks last', () => {
    const model = buildModel(se, 4);
    const w = edit(getWeights(model), 'conv2/kernel', (v, shape) => {
      for (let i = 0; i < v.length; i++) if (i % shape[3] === 9) v[i] = 0;
    });
    const scores = weightNormScores(se, w);
    expect(scores.map((s) => s.length)).toEqual([16, 32, 64]);
    const k1 = w.find((t) => t.name === 'conv1/kernel') as NamedTensor;
    expect(scores[0][3]).toBeCloseTo(Array.from(k1.values).filter((_, i) => i % 16 === 3).reduce((a, x) => a + Math.abs(x), 0), 5);
    expect(rankChannels(scores[1])[0]).toBe(9);
    expect(scores[1][9]).toBe(0);
    model.dispose();
  });

  it('with batch normalization, times the BN scale |gamma| / sqrt(variance + eps)', () => {
    const spec: ModelSpec = { ...se, options: { batchNorm: 1 } };
    const model = buildModel(spec, 4);
    let w = edit(getWeights(model), 'bn1/gamma', (v) => ((v[2] = -2), (v[4] = 0)));
    w = edit(w, 'bn1/moving_variance', (v) => (v[2] = 3));
    const plain = weightNormScores(se, w); // without batch norm: the kernels' L1 norms only
    const scores = weightNormScores(spec, w);
    expect(scores[0][2]).toBeCloseTo((plain[0][2] * 2) / Math.sqrt(3 + BATCH_NORM_EPSILON), 5);
    expect(scores[0][0]).toBeCloseTo(plain[0][0] / Math.sqrt(1 + BATCH_NORM_EPSILON), 5);
    expect(rankChannels(scores[0])[0]).toBe(4);
    model.dispose();
  });

  it('refuses weights that do not fit the spec', () => {
    const model = buildModel(se, 1);
    expect(() => weightNormScores({ ...se, options: { filters2: 8 } }, getWeights(model))).toThrow(/weights: "conv2\/kernel" has 32 output channels, the spec's block 2 has 8/);
    expect(() => weightNormScores(se, [])).toThrow(/weights: no tensor "conv1\/kernel"/);
    model.dispose();
  });
});

describe('rankChannels', () => {
  it('orders from the least to the most important, ties by index', () => {
    expect(rankChannels([0.5, 0.1, 0.9, 0.1])).toEqual([1, 3, 0, 2]);
  });
});
