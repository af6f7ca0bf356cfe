import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { mulberry32 } from '../random';
import { TileTransformer, type TileTransformerArgs } from './tile-transformer';

beforeAll(async () => {
  await selectBackend('cpu');
});

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

interface BagArrays {
  h: number[][][];
  mask: number[][][];
  pos: number[][][];
}

/**
 * Bags of `counts[i]` tiles in `slots` slots: N(0, 1) features, positions in [0, 1]; padded slots
 * all zeros (the contract of fl-core's tile-bags.ts) unless `padValue` says otherwise.
 */
function bagArrays(counts: number[], slots: number, dim: number, seed: number, padValue?: () => number): BagArrays {
  const rand = mulberry32(seed);
  const h: number[][][] = [];
  const mask: number[][][] = [];
  const pos: number[][][] = [];
  for (const count of counts) {
    h.push(Array.from({ length: slots }, (_, t) => Array.from({ length: dim }, () => (t < count ? gaussian(rand) : (padValue?.() ?? 0)))));
    mask.push(Array.from({ length: slots }, (_, t) => [t < count ? 1 : 0]));
    pos.push(Array.from({ length: slots }, (_, t) => (t < count ? [rand(), rand()] : [0, 0])));
  }
  return { h, mask, pos };
}

function tensors(a: BagArrays): [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D] {
  return [tf.tensor3d(a.h), tf.tensor3d(a.mask), tf.tensor3d(a.pos)];
}

const BASE: TileTransformerArgs = { heads: 2, layers: 1, ffUnits: 16, seed: 11 };

/** A built layer (applied once to `inputs`). */
function builtLayer(args: TileTransformerArgs, inputs: tf.Tensor[]): TileTransformer {
  const layer = new TileTransformer(args);
  tf.dispose(layer.apply(inputs) as tf.Tensor);
  return layer;
}

function forward(layer: TileTransformer, a: BagArrays): number[][] {
  return tf.tidy(() => (layer.apply(tensors(a)) as tf.Tensor2D).arraySync());
}

function attentionOf(layer: TileTransformer, a: BagArrays): number[][] {
  return tf.tidy(() => layer.tileAttention(tensors(a)).arraySync());
}

function expectClose(actual: number[][], expected: number[][], digits = 5): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((row, i) => row.forEach((v, j) => expect(v).toBeCloseTo(expected[i][j], digits)));
}

/** Three inputs → TileTransformer → dense softmax head, as the model builder does. */
function bagModel(tiles: number, dim: number, args: TileTransformerArgs, classes = 2): tfl.LayersModel {
  const h = tfl.input({ shape: [tiles, dim], name: 'h' });
  const mask = tfl.input({ shape: [tiles, 1], name: 'mask' });
  const pos = tfl.input({ shape: [tiles, 2], name: 'pos' });
  const z = new TileTransformer({ name: 'encoder', ...args }).apply([h, mask, pos]) as tfl.SymbolicTensor;
  const out = tfl.layers
    .dense({ units: classes, activation: 'softmax', name: 'head', kernelInitializer: tfl.initializers.glorotUniform({ seed: 3 }) })
    .apply(z) as tfl.SymbolicTensor;
  return tfl.model({ inputs: [h, mask, pos], outputs: out });
}

describe('TileTransformer', () => {
  it('rejects invalid arguments, naming the field', () => {
    const bad: [Partial<TileTransformerArgs>, RegExp][] = [
      [{ heads: 0 }, /heads: expected a positive integer/],
      [{ heads: 1.5 }, /heads/],
      [{ layers: 3 }, /layers: expected 1 or 2/],
      [{ layers: 0 }, /layers/],
      [{ ffUnits: 0 }, /ffUnits: expected a positive integer/],
      [{ dropout: 1 }, /dropout: expected a number in \[0, 1\)/],
      [{ dropout: -0.1 }, /dropout/],
      [{ seed: 0.5 }, /seed: expected an integer/],
      [{ positionFrequencies: 0 }, /positionFrequencies: expected an integer from 1 to 12/],
      [{ activation: 'tanh' as 'gelu' }, /activation/],
    ];
    for (const [patch, message] of bad) {
      expect(() => new TileTransformer({ ...BASE, ...patch })).toThrow(ValidationError);
      expect(() => new TileTransformer({ ...BASE, ...patch })).toThrow(message);
    }
  });

  it('rejects a feature width not divisible by heads, and inputs of the wrong shape', () => {
    const layer = new TileTransformer({ ...BASE, heads: 3 });
    const inputs = tensors(bagArrays([2], 3, 4, 1));
    expect(() => layer.apply(inputs)).toThrow(/feature width 4 must be divisible by heads, got heads = 3/);
    const ok = new TileTransformer(BASE);
    expect(() => ok.apply([inputs[0], inputs[1]])).toThrow(ValidationError);
    expect(() => ok.apply([inputs[0], inputs[2], inputs[1]])).toThrow(/mask: expected shape \[b, T, 1\]/);
    tf.dispose(inputs);
  });

  it('outputs [b, D] with 1 and 2 blocks, symbolically and on tensors', () => {
    for (const layers of [1, 2]) {
      const a = bagArrays([5, 2, 3], 5, 8, 2);
      const layer = new TileTransformer({ ...BASE, layers });
      const out = tf.tidy(() => layer.apply(tensors(a)) as tf.Tensor);
      expect(out.shape).toEqual([3, 8]);
      expect(Array.from(out.dataSync()).every(Number.isFinite)).toBe(true);
      out.dispose();
      const sym = new TileTransformer({ ...BASE, layers }).apply([
        tfl.input({ shape: [5, 8] }),
        tfl.input({ shape: [5, 1] }),
        tfl.input({ shape: [5, 2] }),
      ]) as tfl.SymbolicTensor;
      expect(sym.shape).toEqual([null, 8]);
    }
  });

  it('names its weights deterministically, prefixed with the layer name', () => {
    const inputs = tensors(bagArrays([2], 2, 4, 1));
    const layer = builtLayer({ ...BASE, name: 'tt_names', layers: 2, ffUnits: 6, positionFrequencies: 3 }, inputs);
    const block = (i: number) =>
      ['ln1_gamma', 'ln1_beta', 'q_kernel', 'q_bias', 'k_kernel', 'k_bias', 'v_kernel', 'v_bias', 'o_kernel', 'o_bias'].concat(
        ['ln2_gamma', 'ln2_beta', 'ff1_kernel', 'ff1_bias', 'ff2_kernel', 'ff2_bias'],
      ).map((n) => `block${i}_${n}`);
    const names = ['pos_kernel', 'pos_bias', 'cls', ...block(0), ...block(1), 'final_ln_gamma', 'final_ln_beta'];
    expect(layer.weights.map((w) => w.originalName)).toEqual(names.map((n) => `tt_names/${n}`));
    expect(layer.trainableWeights).toHaveLength(names.length);
    const shapeOf = (n: string) => layer.weights.find((w) => w.originalName === `tt_names/${n}`)?.shape;
    expect(shapeOf('pos_kernel')).toEqual([12, 4]);
    expect(shapeOf('block1_ff1_kernel')).toEqual([4, 6]);
    expect(shapeOf('block1_ff2_kernel')).toEqual([6, 4]);
    expect(shapeOf('cls')).toEqual([4]);
    tf.dispose(inputs);
  });

  it('gives the same weights for the same seed, whatever else used random numbers in between', () => {
    const inputs = tensors(bagArrays([3], 3, 8, 1));
    const a = builtLayer({ ...BASE, seed: 42 }, inputs);
    tf.dispose([tf.randomUniform([100]), tf.randomNormal([7])]);
    Math.random();
    const b = builtLayer({ ...BASE, seed: 42 }, inputs);
    const c = builtLayer({ ...BASE, seed: 43 }, inputs);
    const values = (l: TileTransformer) => l.getWeights().map((w) => Array.from(w.dataSync()));
    expect(values(b)).toEqual(values(a));
    const kernels = (l: TileTransformer) => values(l).filter((_, i) => l.weights[i].originalName.endsWith('kernel'));
    kernels(a).forEach((k, i) => expect(k).not.toEqual(kernels(c)[i]));
    // Distinct seeds within one layer: no two kernels of equal shape are equal.
    const [q, k] = [5, 7].map((i) => Array.from(a.getWeights()[i].dataSync()));
    expect(a.weights[5].originalName).toMatch(/block0_q_kernel$/);
    expect(a.weights[7].originalName).toMatch(/block0_k_kernel$/);
    expect(q).not.toEqual(k);
    tf.dispose(inputs);
  });

  it('gives attention summing to 1 over each bag, 0 exactly on padding, for bags of unequal size', () => {
    for (const layers of [1, 2]) {
      const counts = [7, 1, 4, 2];
      const a = bagArrays(counts, 7, 8, 5);
      const attention = attentionOf(builtLayer({ ...BASE, layers, seed: 3 }, tensors(a)), a);
      counts.forEach((count, b) => {
        expect(attention[b]).toHaveLength(7);
        expect(attention[b].reduce((s, x) => s + x, 0)).toBeCloseTo(1, 5);
        attention[b].forEach((x, t) => (t < count ? expect(x).toBeGreaterThan(0) : expect(x).toBe(0)));
      });
      expect(attention[1][0]).toBeCloseTo(1, 6);
    }
  });

  it('returns zeros for a bag without tiles, and refuses an unbuilt layer', () => {
    const a = bagArrays([0, 2], 3, 4, 5);
    const layer = new TileTransformer(BASE);
    expect(() => layer.tileAttention(tensors(a))).toThrow(/needs a built layer/);
    tf.dispose(layer.apply(tensors(a)) as tf.Tensor);
    const attention = attentionOf(layer, a);
    expect(attention[0]).toEqual([0, 0, 0]);
    expect(attention[1][0] + attention[1][1]).toBeCloseTo(1, 5);
  });

  it('ignores the features (and positions) of padded slots; a bag alone gives the same output', () => {
    const counts = [6, 2, 4];
    const clean = bagArrays(counts, 6, 8, 9);
    const rand = mulberry32(77);
    const noisy = bagArrays(counts, 6, 8, 9, () => 1e3 * gaussian(rand));
    noisy.pos = noisy.pos.map((bag, b) => bag.map((p, t) => (t < counts[b] ? p : [rand(), rand()])));
    for (const layers of [1, 2]) {
      const layer = builtLayer({ ...BASE, layers, seed: 5 }, tensors(clean));
      const out = forward(layer, clean);
      expectClose(forward(layer, noisy), out);
      expectClose(attentionOf(layer, noisy), attentionOf(layer, clean), 6);
      // Bag 1 alone, in a bag of exactly its tiles.
      const alone: BagArrays = { h: [clean.h[1].slice(0, 2)], mask: [clean.mask[1].slice(0, 2)], pos: [clean.pos[1].slice(0, 2)] };
      expectClose(forward(layer, alone), [out[1]]);
      expectClose(attentionOf(layer, alone), [attentionOf(layer, clean)[1].slice(0, 2)], 6);
    }
  });

  it('leaks no tensors in a forward pass or tileAttention', () => {
    const inputs = tensors(bagArrays([4, 2], 4, 8, 3));
    const layer = builtLayer({ ...BASE, layers: 2, dropout: 0.2 }, inputs);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      layer.apply(inputs);
      layer.apply(inputs, { training: true });
      layer.tileAttention(inputs);
    });
    expect(tf.memory().numTensors).toBe(before);
    const out = layer.apply(inputs) as tf.Tensor;
    const att = layer.tileAttention(inputs);
    expect(tf.memory().numTensors).toBe(before + 2);
    tf.dispose([out, att, ...inputs]);
  });

  it('applies dropout only while training', () => {
    const inputs = tensors(bagArrays([4, 3], 4, 8, 3));
    const layer = builtLayer({ ...BASE, dropout: 0.5 }, inputs);
    const plain = builtLayer(BASE, inputs); // same seed: same weights, no dropout
    const run = (l: TileTransformer, training?: boolean) =>
      tf.tidy(() => (l.apply(inputs, training === undefined ? {} : { training }) as tf.Tensor2D).arraySync());
    expectClose(run(layer), run(plain));
    expectClose(run(layer, false), run(plain));
    expect(run(layer, true)).not.toEqual(run(plain));
    expect(run(layer, true)).not.toEqual(run(layer, true)); // fresh masks per call
    tf.dispose(inputs);
  });

  it('round-trips through getConfig, modelFromJSON and a saved model with identical outputs', async () => {
    const args: TileTransformerArgs = { heads: 4, layers: 2, ffUnits: 12, seed: 21, dropout: 0.1, positionFrequencies: 3, activation: 'relu' };
    const model = bagModel(5, 8, args);
    const layer = model.getLayer('encoder') as TileTransformer;
    expect(layer.getConfig()).toMatchObject({ ...args, name: 'encoder' });
    const a = bagArrays([5, 3], 5, 8, 4);
    const predict = (m: tfl.LayersModel) => tf.tidy(() => (m.predict(tensors(a)) as tf.Tensor2D).arraySync());
    const expected = predict(model);

    const fromJson = await tfl.models.modelFromJSON({ modelTopology: model.toJSON(null, false) as tf.io.ModelJSON['modelTopology'] });
    expect(fromJson.getLayer('encoder')).toBeInstanceOf(TileTransformer);
    fromJson.setWeights(model.getWeights());
    expectClose(predict(fromJson), expected, 6);

    let saved: tf.io.ModelArtifacts | null = null;
    await model.save(
      tf.io.withSaveHandler(async (artifacts) => {
        saved = artifacts;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    const artifacts = saved as unknown as tf.io.ModelArtifacts;
    expect(artifacts.weightSpecs?.map((s) => s.name)).toContain('encoder/block1_q_kernel');
    const loaded = await tfl.loadLayersModel(tf.io.fromMemory(artifacts));
    const loadedLayer = loaded.getLayer('encoder') as TileTransformer;
    expect(loadedLayer).toBeInstanceOf(TileTransformer);
    expect(loadedLayer.getConfig()).toMatchObject(args);
    expectClose(predict(loaded), expected, 6);
    expectClose(attentionOf(loadedLayer, a), attentionOf(layer, a), 6);
    tf.dispose([model, fromJson, loaded].flatMap((m) => m.getWeights()));
  });
});

/**
 * Checks d(loss)/d(w) for every element of every weight against central finite differences, on
 * b = 2 bags (one padded), T = 3, D = 4, heads = 2. Float32: eps = 1e-3, tolerance 1e-2 relative
 * plus a small absolute floor.
 */
function checkGradients(layers: number): void {
  const a = bagArrays([3, 2], 3, 4, 8);
  const inputs = tensors(a);
  const layer = builtLayer({ heads: 2, layers, ffUnits: 6, seed: 17, positionFrequencies: 2 }, inputs);
  const r = tf.tensor2d([
    [0.3, -1.1, 0.7, 0.5],
    [-0.4, 0.9, 1.3, -0.8],
  ]);
  const loss = () => tf.tidy(() => tf.sum(tf.mul(layer.apply(inputs) as tf.Tensor, r)) as tf.Scalar);
  const variables = layer.trainableWeights.map((w) => w.read() as tf.Variable);
  const { grads } = tf.variableGrads(loss, variables);
  const eps = 1e-3;
  let checked = 0;
  let worst = 0;
  layer.trainableWeights.forEach((w, wi) => {
    const v = variables[wi];
    const analytic = grads[v.name].dataSync();
    const base = Float32Array.from(v.dataSync());
    const at = (k: number, delta: number): number => {
      const values = Float32Array.from(base);
      values[k] += delta;
      v.assign(tf.tensor(values, v.shape));
      const value = tf.tidy(() => loss().dataSync()[0]);
      return value;
    };
    for (let k = 0; k < base.length; k++) {
      const numeric = (at(k, eps) - at(k, -eps)) / (2 * eps);
      const error = Math.abs(numeric - analytic[k]);
      const tolerance = 1e-2 * Math.max(Math.abs(numeric), Math.abs(analytic[k])) + 2e-3;
      worst = Math.max(worst, error / tolerance);
      if (error > tolerance) throw new Error(`${w.originalName}[${k}]: analytic ${analytic[k]}, numeric ${numeric}`);
      checked++;
    }
    v.assign(tf.tensor(base, v.shape));
  });
  expect(worst).toBeLessThanOrEqual(1);
  expect(checked).toBeGreaterThan(150);
  // The weights reach the output: some gradient in each weight but the padded-only ones is non-zero.
  for (const name of ['block0_q_kernel', 'block0_k_kernel', 'block0_v_kernel', 'pos_kernel', 'cls', 'block0_ff1_kernel']) {
    const v = variables[layer.trainableWeights.findIndex((w) => w.originalName.endsWith(`/${name}`))];
    expect(Math.max(...Array.from(grads[v.name].dataSync()).map(Math.abs))).toBeGreaterThan(1e-4);
  }
  tf.dispose([r, ...inputs, ...Object.values(grads)]);
}

describe('TileTransformer gradients (cpu)', () => {
  it('match central finite differences, 1 block', () => checkGradients(1));
  it('match central finite differences, 2 blocks', () => checkGradients(2));
});

describe('TileTransformer on wasm', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });
  afterAll(async () => {
    await selectBackend('cpu');
  });

  it('has gradients matching finite differences on wasm', () => {
    expect(tf.getBackend()).toBe('wasm');
    checkGradients(2);
  });

  it('trains a small model on a toy problem (loss decreases, bags classified)', async () => {
    expect(tf.getBackend()).toBe('wasm');
    // Positive bags hold one signal tile (a fixed pattern) among 2..8 noise tiles.
    const tiles = 8;
    const dim = 8;
    const n = 64;
    const rand = mulberry32(123);
    const pattern = [1.5, 1.5, -1.5, -1.5, 1.5, -1.5, 1.5, -1.5];
    const counts = Array.from({ length: n }, () => 2 + Math.floor(rand() * 7));
    const a = bagArrays(counts, tiles, dim, 321);
    const labels = counts.map((count, b) => {
      const positive = b % 2 === 1;
      if (positive) a.h[b][Math.floor(rand() * count)] = pattern.map((p) => p + 0.2 * gaussian(rand));
      return positive ? 1 : 0;
    });
    const model = bagModel(tiles, dim, { heads: 2, layers: 1, ffUnits: 16, seed: 5, dropout: 0.1 });
    model.compile({ optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
    const xs = tensors(a);
    const ys = tf.oneHot(tf.tensor1d(labels, 'int32'), 2);
    const history = await model.fit(xs, ys, { epochs: 25, batchSize: 16, shuffle: false, verbose: 0 });
    const losses = history.history['loss'] as number[];
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses[losses.length - 1]).toBeLessThan(0.5 * losses[0]);
    const probs = tf.tidy(() => (model.predict(xs) as tf.Tensor2D).arraySync());
    const correct = probs.filter((p, b) => (p[1] > 0.5 ? 1 : 0) === labels[b]).length;
    expect(correct / n).toBeGreaterThan(0.9);
    // The signal tile gets most of the class token's attention in positive bags.
    const layer = model.getLayer('encoder') as TileTransformer;
    const attention = tf.tidy(() => layer.tileAttention(xs).arraySync());
    expect(attention.every((row, b) => row.every((x, t) => (t < counts[b] ? x >= 0 : x === 0)))).toBe(true);
    tf.dispose([...xs, ys, ...model.getWeights()]);
  });
});
