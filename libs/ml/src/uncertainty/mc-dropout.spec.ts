import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { predictProbabilities } from '../evaluate';
import { buildModel } from '../models';
import { hasDropout, mcDropoutPasses } from './mc-dropout';

beforeAll(async () => {
  await selectBackend('wasm');
});

const FEATURES = 4;
const ROWS = 30;
// Rows far from the batch-norm moving mean (2), so that a batch-statistics normalization would differ.
const rows = Float32Array.from({ length: ROWS * FEATURES }, (_, i) => ((i * 7) % 11) - 3 + 0.25 * (i % FEATURES));

/** input -> batch norm (moving mean 2, variance 4, identity scale) -> dropout(rate) [-> dense softmax]. */
function tinyModel(rate: number, withHead: boolean): tfl.LayersModel {
  const input = tfl.input({ shape: [FEATURES] });
  const bn = tfl.layers.batchNormalization({ name: 'bn', epsilon: 0 });
  let x = bn.apply(input) as tfl.SymbolicTensor;
  x = tfl.layers.dropout({ name: 'drop', rate }).apply(x) as tfl.SymbolicTensor;
  if (withHead) x = tfl.layers.dense({ name: 'out', units: 3, activation: 'softmax', kernelInitializer: 'glorotUniform' }).apply(x) as tfl.SymbolicTensor;
  const model = tfl.model({ inputs: input, outputs: x });
  bn.setWeights([tf.ones([FEATURES]), tf.zeros([FEATURES]), tf.fill([FEATURES], 2), tf.fill([FEATURES], 4)]);
  return model;
}

describe('mcDropoutPasses', () => {
  it('drops with the layer rate and keeps batch norm in inference mode', async () => {
    const model = tinyModel(0.5, false);
    const passes = await mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 4, seed: 7 });
    expect(passes).toHaveLength(4);
    let zeros = 0;
    for (const out of passes) {
      expect(out).toHaveLength(ROWS * FEATURES);
      for (let i = 0; i < out.length; i++) {
        // Inference batch norm: (x - 2) / 2; inverted dropout at 0.5: 0 or twice that.
        const kept = 2 * ((rows[i] - 2) / 2);
        if (out[i] === 0 && kept !== 0) zeros++;
        else expect(out[i]).toBeCloseTo(kept, 5);
      }
    }
    // 480 values, each dropped with probability 0.5.
    expect(zeros).toBeGreaterThan(0.4 * 480);
    expect(zeros).toBeLessThan(0.6 * 480);
    model.dispose();
  });

  it('is reproducible for a seed, differs across seeds and passes, and does not depend on the batch size', async () => {
    const model = tinyModel(0.3, true);
    const a = await mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 3, seed: 11 });
    const again = await mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 3, seed: 11 });
    expect(again).toEqual(a);
    const other = await mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 3, seed: 12 });
    expect(other[0]).not.toEqual(a[0]);
    expect(a[1]).not.toEqual(a[0]);
    for (const batchSize of [1, 7]) {
      const b = await mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 3, seed: 11, batchSize });
      for (let p = 0; p < 3; p++) for (let i = 0; i < a[p].length; i++) expect(b[p][i]).toBeCloseTo(a[p][i], 5);
    }
    // Softmax rows stay distributions.
    for (let r = 0; r < ROWS; r++) expect(a[0][r * 3] + a[0][r * 3 + 1] + a[0][r * 3 + 2]).toBeCloseTo(1, 5);
    model.dispose();
  });

  it('leaves no tensor behind and the model deterministic afterwards', async () => {
    const model = tinyModel(0.5, true);
    const plain = predictProbabilities(model, rows, ROWS, [FEATURES]);
    await mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 1, seed: 1 });
    const before = tf.memory().numTensors;
    await mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 5, seed: 2, batchSize: 8 });
    expect(tf.memory().numTensors).toBe(before);
    // The dropout layer's own call is back: plain prediction has no dropout.
    expect(predictProbabilities(model, rows, ROWS, [FEATURES])).toEqual(plain);
    const layer = model.getLayer('drop');
    expect(Object.prototype.hasOwnProperty.call(layer, 'call')).toBe(false);
    model.dispose();
  });

  it('finds dropout in built models and refuses a model without it', async () => {
    const withDropout = buildModel({ kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { dropout: 0.25 } }, 1);
    const without = buildModel({ kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { dropout: 0 } }, 1);
    expect(hasDropout(withDropout)).toBe(true);
    expect(hasDropout(without)).toBe(false);
    // A nested model counts.
    const input = tfl.input({ shape: [16, 16, 3] });
    const outer = tfl.model({ inputs: input, outputs: withDropout.apply(input) as tfl.SymbolicTensor });
    expect(hasDropout(outer)).toBe(true);
    const images = Float32Array.from({ length: 2 * 16 * 16 * 3 }, (_, i) => ((i * 37) % 101) / 100);
    await expect(mcDropoutPasses(without, images, 2, [16, 16, 3], { passes: 2, seed: 1 })).rejects.toThrow(/no Dropout layer/);
    await expect(mcDropoutPasses(without, images, 2, [16, 16, 3], { passes: 2, seed: 1 })).rejects.toBeInstanceOf(ValidationError);
    const nested = await mcDropoutPasses(outer, images, 2, [16, 16, 3], { passes: 2, seed: 1 });
    expect(nested[0]).not.toEqual(nested[1]);
    without.dispose();
    withDropout.dispose();
  });

  it('names the bad option or input', async () => {
    const model = tinyModel(0.5, true);
    await expect(mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 0, seed: 1 })).rejects.toThrow(/options\.passes/);
    await expect(mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 2, seed: -1 })).rejects.toThrow(/options\.seed/);
    await expect(mcDropoutPasses(model, rows, ROWS, [FEATURES], { passes: 2, seed: 1, batchSize: 0 })).rejects.toThrow(/options\.batchSize/);
    await expect(mcDropoutPasses(model, rows, ROWS, [5], { passes: 2, seed: 1 })).rejects.toThrow(/rowShape: the model takes rows of 4, got 5/);
    await expect(mcDropoutPasses(model, rows, ROWS + 1, [FEATURES], { passes: 2, seed: 1 })).rejects.toThrow(/rows\.images/);
    model.dispose();
  });
});
