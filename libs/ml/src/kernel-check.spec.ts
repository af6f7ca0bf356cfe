import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { selectBackend } from './backend';
import { MissingKernelError, assertModelTrains } from './kernel-check';
import { buildModel } from './models';
import { trainLocal } from './train';
import { brightDarkImages } from './testing/synthetic';
import { getWeights } from './weights-bridge';

describe('training kernels check', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });

  it('passes for the default model on wasm without changing its weights or leaking tensors', () => {
    const model = buildModel({ kind: 'small-cnn', imageSize: 24, numClasses: 2, options: { batchNorm: 1 } });
    const before = getWeights(model);
    const tensors = tf.memory().numTensors;
    assertModelTrains(model);
    expect(tf.memory().numTensors).toBe(tensors);
    getWeights(model).forEach((t, i) => expect(Array.from(t.values)).toEqual(Array.from(before[i].values)));
    model.dispose();
  });

  it('stops training before the first step when wasm lacks a gradient kernel, naming it', async () => {
    // HistoFed provides every gradient kernel its models use; take one away to see the check work.
    const kernel = tf.getKernel(tf.DepthwiseConv2dNativeBackpropFilter, 'wasm') as tf.KernelConfig;
    tf.unregisterKernel(tf.DepthwiseConv2dNativeBackpropFilter, 'wasm');
    try {
      await missingKernelStopsTraining();
    } finally {
      tf.registerKernel(kernel);
    }
  });

  async function missingKernelStopsTraining(): Promise<void> {
    const model = tfl.sequential({
      layers: [
        tfl.layers.depthwiseConv2d({ inputShape: [24, 24, 3], kernelSize: 3, name: 'dw' }),
        tfl.layers.globalAveragePooling2d({}),
        tfl.layers.dense({ units: 2, activation: 'softmax' }),
      ],
    });
    expect(() => assertModelTrains(model)).toThrow(MissingKernelError);
    expect(() => assertModelTrains(model)).toThrow(/the wasm backend has no 'DepthwiseConv2dNativeBackpropFilter' kernel/);
    const before = model.getWeights().map((w) => w.dataSync().slice());
    const progress: number[] = [];
    await expect(
      trainLocal(model, brightDarkImages(8, 24, 1), {
        epochs: 1,
        batchSize: 4,
        learningRate: 0.01,
        proximalMu: 0,
        seed: 1,
        onProgress: (p) => progress.push(p.batch),
      }),
    ).rejects.toThrow(MissingKernelError);
    expect(progress).toEqual([]);
    model.getWeights().forEach((w, i) => expect(Array.from(w.dataSync())).toEqual(Array.from(before[i])));
    model.dispose();
  }
});
