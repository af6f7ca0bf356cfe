import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec, NamedTensor } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { buildModel, describeModel } from '../models';
import { loadModel, saveModel } from '../saved-model';
import { getWeights, setWeights } from '../weights-bridge';
import { pruneModel, pruneWeights, type ChannelKeep } from './prune-model';

const se: ModelSpec = { kind: 'se-cnn', imageSize: 32, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { dropout: 0 } };
const seBn: ModelSpec = { ...se, options: { batchNorm: 1, dropout: 0 } };
const attention: ModelSpec = { ...se, kind: 'attention-cnn', options: { batchNorm: 1, dropout: 0 } };
const small: ModelSpec = { kind: 'small-cnn', imageSize: 32, numClasses: 2, options: { dropout: 0 } };

function input(n = 3, size = 32): tf.Tensor {
  return tf.tidy(() => tf.randomUniform([n, size, size, 3], 0, 1, 'float32', 42));
}

function outputs(model: tfl.LayersModel, x: tf.Tensor): Float32Array {
  return tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync() as Float32Array);
}

/** Weights with non-trivial batch-norm parameters and statistics (seeded). */
function withBatchNormStats(weights: NamedTensor[]): NamedTensor[] {
  return weights.map((t) => {
    if (!t.name.startsWith('bn')) return t;
    const v = t.values.map((_, i) => {
      const r = Math.sin(i * 12.9898 + t.name.length) * 0.5;
      if (t.name.endsWith('moving_variance')) return 0.5 + Math.abs(r);
      if (t.name.endsWith('gamma')) return 1 + r;
      return r * 0.2;
    });
    return { ...t, values: Float32Array.from(v) };
  });
}

function setValues(weights: NamedTensor[], name: string, f: (values: Float32Array, shape: readonly number[]) => void): NamedTensor[] {
  return weights.map((t) => {
    if (t.name !== name) return t;
    const values = new Float32Array(t.values);
    f(values, t.shape);
    return { ...t, values };
  });
}

/**
 * Cuts the `removed` channels of each block out of the network's function: their SE gate at exactly
 * 0 (expand column 0, bias -1e4) and their squeeze out of the SE bottleneck (se_reduce row 0; a
 * closed gate alone would still feed the other channels' gates through the bottleneck).
 */
function gatesClosed(weights: NamedTensor[], removed: Record<number, number[]>): NamedTensor[] {
  let w = weights;
  for (const [block, channels] of Object.entries(removed)) {
    w = setValues(w, `se${block}_reduce/kernel`, (v, shape) => {
      for (const c of channels) v.fill(0, c * shape[1], (c + 1) * shape[1]);
    });
    w = setValues(w, `se${block}_expand/kernel`, (v, shape) => {
      const cout = shape[1];
      for (const c of channels) for (let h = 0; h < shape[0]; h++) v[h * cout + c] = 0;
    });
    w = setValues(w, `se${block}_expand/bias`, (v) => channels.forEach((c) => (v[c] = -1e4)));
  }
  return w;
}

/** The complement of `removed` in each block of `filters`. */
function keepOf(filters: number[], removed: Record<number, number[]>): ChannelKeep {
  const keep: Record<number, number[]> = {};
  filters.forEach((f, i) => {
    const r = new Set(removed[i + 1] ?? []);
    keep[i + 1] = Array.from({ length: f }, (_, c) => c).filter((c) => !r.has(c));
  });
  return keep;
}

function expectClose(a: Float32Array, b: Float32Array, digits = 5): void {
  expect(a.length).toBe(b.length);
  a.forEach((x, i) => expect(x).toBeCloseTo(b[i], digits));
}

beforeAll(async () => {
  await selectBackend('wasm');
});

describe('pruneWeights / pruneModel', () => {
  it.each([
    ['se-cnn', se],
    ['se-cnn with batch norm', seBn],
    ['attention-cnn', attention],
    ['small-cnn', small],
  ])('keeping every channel of a %s changes nothing: same spec, weights and outputs', (_, spec) => {
    const model = buildModel(spec, 3);
    setWeights(model, withBatchNormStats(getWeights(model)));
    const before = getWeights(model);
    const x = input();
    const out = outputs(model, x);
    for (const keep of [{}, { 1: Array.from({ length: 16 }, (_, c) => 15 - c) }] as ChannelKeep[]) {
      const p = pruneModel(model, spec, keep);
      expect(p.spec).toBe(spec);
      expect(p.weights.map((t) => [t.name, t.shape])).toEqual(before.map((t) => [t.name, t.shape]));
      p.weights.forEach((t, i) => expect(Array.from(t.values)).toEqual(Array.from(before[i].values)));
      expect(p.kept.map((k) => k.length)).toEqual([16, 32, 64]);
      const rebuilt = buildModel(p.spec, 9);
      setWeights(rebuilt, p.weights);
      expect(Array.from(outputs(rebuilt, x))).toEqual(Array.from(out));
      rebuilt.dispose();
    }
    x.dispose();
    model.dispose();
  });

  const removed = { 1: [0, 3, 7, 8, 15], 2: [1, 2, 30, 31, 17, 5], 3: [0, 10, 20, 30, 40, 50, 60, 63] };

  it.each([
    ['se-cnn', se],
    ['se-cnn with batch norm', seBn],
    ['attention-cnn (the mean input of the spatial attention rescaled)', attention],
  ])('a pruned %s computes what the original computes with the removed channels\' SE gates at 0 and their squeeze cut', (_, spec) => {
    const model = buildModel(spec, 5);
    let w = gatesClosed(withBatchNormStats(getWeights(model)), removed);
    // strong spatial attention (glorot-small 7x7 kernels leave the map near 0.5 everywhere)
    for (const n of [1, 2, 3]) w = setValues(w, `sa${n}_conv/kernel`, (v) => v.forEach((x, i) => (v[i] = x * 30)));
    setWeights(model, w);
    const x = input();
    const reference = outputs(model, x);
    const p = pruneModel(model, spec, keepOf([16, 32, 64], removed));
    expect(p.spec.options).toEqual({ ...spec.options, filters1: 11, filters2: 26, filters3: 56, seUnits1: 2, seUnits2: 4, seUnits3: 8 });
    const pruned = buildModel(p.spec, 1);
    setWeights(pruned, p.weights); // the layout of the pruned spec's model
    expectClose(outputs(pruned, x), reference);
    // and it is a different function from the model with open gates
    const open = buildModel(spec, 5);
    setWeights(open, withBatchNormStats(getWeights(open)));
    expect(Math.max(...Array.from(outputs(open, x), (v, i) => Math.abs(v - reference[i])))).toBeGreaterThan(1e-4);
    [pruned, open, model].forEach((m) => m.dispose());
    x.dispose();
  });

  it('a pruned small-cnn computes what the original computes when the removed channels\' outgoing weights are 0', () => {
    const model = buildModel(small, 4);
    let w = getWeights(model);
    const zeroInputs = (name: string, axis: 2 | 0, channels: number[]) =>
      (w = setValues(w, name, (v, shape) => {
        const cin = shape[axis];
        const cout = axis === 2 ? shape[3] : shape[1];
        for (let i = 0; i < v.length; i++) if (channels.includes(Math.floor(i / cout) % cin)) v[i] = 0;
      }));
    zeroInputs('conv2/kernel', 2, removed[1]);
    zeroInputs('conv3/kernel', 2, removed[2]);
    zeroInputs('fc1/kernel', 0, removed[3]);
    setWeights(model, w);
    const x = input();
    const p = pruneWeights(small, w, keepOf([16, 32, 64], removed));
    expect(p.spec.options).toEqual({ dropout: 0, filters1: 11, filters2: 26, filters3: 56 });
    const pruned = buildModel(p.spec, 1);
    setWeights(pruned, p.weights);
    expectClose(outputs(pruned, x), outputs(model, x));
    [pruned, model].forEach((m) => m.dispose());
    x.dispose();
  });

  it('shrinks parameters and multiply-adds as the shapes say', () => {
    const model = buildModel(se, 2);
    const full = describeModel(model);
    const p = pruneModel(model, se, { 1: [0, 1, 2, 3, 4, 5, 6, 7], 2: Array.from({ length: 16 }, (_, c) => 2 * c), 3: Array.from({ length: 32 }, (_, c) => c + 32) });
    const pruned = buildModel(p.spec, 1);
    setWeights(pruned, p.weights);
    const d = describeModel(pruned);
    expect(d.parameters).toBe(p.weights.reduce((n, t) => n + t.values.length, 0));
    const macs = (name: string, m = d) => m.layers.find((l) => l.name === name)?.multiplyAdds;
    expect(macs('conv1')).toBe(32 * 32 * 9 * 3 * 8);
    expect(macs('conv2')).toBe(16 * 16 * 9 * 8 * 16);
    expect(macs('conv3')).toBe(8 * 8 * 9 * 16 * 32);
    expect(macs('fc1')).toBe(32 * 64);
    expect(macs('se2_reduce')).toBe(16 * 4); // the bottleneck keeps its 4 units
    expect(d.parameters).toBeLessThan(full.parameters / 2);
    expect(d.multiplyAdds).toBeLessThan(full.multiplyAdds / 3);
    // fc1 rows are the kept channels of conv3 (GAP keeps one feature per channel)
    const fc1 = p.weights.find((t) => t.name === 'fc1/kernel') as NamedTensor;
    const fc1Full = getWeights(model).find((t) => t.name === 'fc1/kernel') as NamedTensor;
    expect(Array.from(fc1.values.subarray(0, 64))).toEqual(Array.from(fc1Full.values.subarray(32 * 64, 33 * 64)));
    [pruned, model].forEach((m) => m.dispose());
  });

  it('prunes a pruned model again (iterative pruning): the same as pruning to the composed channels at once', () => {
    const model = buildModel(seBn, 6);
    setWeights(model, withBatchNormStats(getWeights(model)));
    const first = pruneModel(model, seBn, { 1: [1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14, 15], 3: Array.from({ length: 48 }, (_, c) => c + 16) });
    const second = pruneWeights(first.spec, first.weights, { 1: [0, 2, 4, 6, 8, 10, 11], 2: [3, 4, 5] });
    const once = pruneModel(model, seBn, { 1: [1, 3, 8, 10, 12, 14, 15], 2: [3, 4, 5], 3: Array.from({ length: 48 }, (_, c) => c + 16) });
    expect(second.spec).toEqual(once.spec);
    expect(second.weights).toEqual(once.weights);
    model.dispose();
  });

  it('saves and loads a pruned model; the manifest spec carries the pruned shapes', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'histofed-pruned-'));
    try {
      const model = buildModel(attention, 8);
      setWeights(model, withBatchNormStats(getWeights(model)));
      const p = pruneModel(model, attention, { 2: [0, 1, 2, 3, 4, 5, 6, 7], 3: Array.from({ length: 16 }, (_, c) => c * 4) });
      const pruned = buildModel(p.spec, 1);
      setWeights(pruned, p.weights);
      const x = input(2);
      const want = outputs(pruned, x);
      await saveModel(dir, pruned, {
        classes: ['benign', 'malignant'],
        subtypeClasses: ['A', 'F', 'DC', 'LC'],
        spec: p.spec,
        provenance: { kind: 'global', runId: 'run-p', round: 2 },
      });
      const loaded = await loadModel(dir, { inputSize: 32 });
      expect(loaded.manifest.spec.options).toMatchObject({ filters1: 16, filters2: 8, filters3: 16, seUnits1: 2, seUnits2: 4, seUnits3: 8 });
      expect(Array.from(outputs(loaded.model, x))).toEqual(Array.from(want));
      // a consumer rebuilding from the manifest's spec takes the saved weights (federated weight sets, ensembles)
      const rebuilt = buildModel(loaded.manifest.spec as ModelSpec, 1);
      setWeights(rebuilt, getWeights(loaded.model));
      expect(Array.from(outputs(rebuilt, x))).toEqual(Array.from(want));
      [model, pruned, loaded.model, rebuilt].forEach((m) => m.dispose());
      x.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad keep lists, other kinds and weights of another shape with a ValidationError naming them', () => {
    const model = buildModel(se, 1);
    const w = getWeights(model);
    const bad = (keep: ChannelKeep, message: RegExp, spec = se, weights = w) => {
      expect(() => pruneWeights(spec, weights, keep)).toThrow(ValidationError);
      expect(() => pruneWeights(spec, weights, keep)).toThrow(message);
    };
    bad({ 4: [0] }, /keep\[4\]: no conv block 4 \(the model has blocks 1\.\.3\)/);
    bad({ 0: [0] }, /keep\[0\]: no conv block 0/);
    bad({ 2: [] }, /keep\[2\]: keeps no channel of conv2/);
    bad({ 1: [0, 16] }, /keep\[1\]\[1\]: channel 16 out of range \[0, 16\) of conv1/);
    bad({ 1: [-1] }, /keep\[1\]\[0\]: channel -1 out of range/);
    bad({ 1: [0.5] }, /keep\[1\]\[0\]: channel 0.5 out of range/);
    bad({ 3: [2, 2] }, /keep\[3\]\[1\]: channel 2 listed twice/);
    bad({}, /model.kind: channel pruning needs a compact CNN/, {
      kind: 'backbone-head',
      imageSize: 32,
      numClasses: 2,
      backbone: { name: 'mobilenet-v2-imagenet', cut: 'x', input: 'signed', features: 6 },
      tiles: { scale: 1, views: 0 },
    });
    bad({ 1: [0] }, /weights: "conv1\/kernel" has shape \[3, 3, 3, 16\], the spec implies 8 along axis 3/, { ...se, options: { filters1: 8 } });
    bad({ 1: [0] }, /weights: no tensor "se1_reduce\/kernel"/, se, w.filter((t) => !t.name.startsWith('se1_reduce')));
    model.dispose();
  });
});
