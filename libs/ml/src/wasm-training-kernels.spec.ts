import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { selectBackend } from './backend';
import { WASM_TRAINING_KERNELS, conv2DBackpropFilterWasm, conv2DBackpropInputWasm } from './wasm-training-kernels';

/** Deterministic pseudo-random values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

type Pad = 'same' | 'valid' | [[0, 0], [number, number], [number, number], [0, 0]];

interface Case {
  batch: number;
  h: number;
  w: number;
  inC: number;
  outC: number;
  f: number;
  stride: number;
  pad: Pad;
}

interface Gradients {
  filterShape: number[];
  filter: Float32Array;
  inputShape: number[];
  input: Float32Array;
}

/** Conv2DBackpropFilter and Conv2DBackpropInput of one case, run as kernels on `backend`. */
function gradients(backend: string, c: Case): Gradients {
  const prev = tf.getBackend();
  void tf.setBackend(backend); // both backends are initialised already, so this is synchronous
  try {
    return tf.tidy(() => {
      const x = tf.tensor4d(values(c.batch * c.h * c.w * c.inC, 7 + c.h), [c.batch, c.h, c.w, c.inC]);
      const filter = tf.tensor4d(values(c.f * c.f * c.inC * c.outC, 11), [c.f, c.f, c.inC, c.outC]);
      const probe = tf.conv2d(x, filter, c.stride, c.pad);
      const dy = tf.tensor4d(values(probe.size, 13 + c.w), probe.shape as [number, number, number, number]);
      const common = { strides: [c.stride, c.stride], pad: c.pad, dataFormat: 'NHWC', dimRoundingMode: undefined };
      const df = tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, {
        ...common,
        filterShape: filter.shape,
      } as unknown as tf.NamedAttrMap) as tf.Tensor;
      const dx = tf.engine().runKernel(tf.Conv2DBackpropInput, { dy, filter }, {
        ...common,
        inputShape: x.shape,
      } as unknown as tf.NamedAttrMap) as tf.Tensor;
      return {
        filterShape: df.shape,
        filter: df.dataSync() as Float32Array,
        inputShape: dx.shape,
        input: dx.dataSync() as Float32Array,
      };
    });
  } finally {
    void tf.setBackend(prev);
  }
}

function maxRelativeError(a: Float32Array, b: Float32Array): number {
  let maxAbs = 0;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(a[i]), Math.abs(b[i]));
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
  }
  return maxAbs === 0 ? maxDiff : maxDiff / maxAbs;
}

const cases: Case[] = [];
for (const stride of [1, 2]) {
  for (const pad of ['same', 'valid'] as const) {
    for (const [h, w] of [
      [7, 7],
      [8, 6],
      [9, 10],
    ]) {
      for (const batch of [1, 3]) {
        for (const inC of [1, 4]) {
          for (const f of [3, 2]) {
            cases.push({ batch, h, w, inC, outC: inC === 1 ? 5 : 2, f, stride, pad });
          }
        }
      }
    }
  }
}
// explicit padding, a 1x1 filter, stride 3, a 5x5 filter on a small image
cases.push({ batch: 2, h: 9, w: 8, inC: 3, outC: 4, f: 3, stride: 2, pad: [[0, 0], [1, 2], [0, 1], [0, 0]] });
cases.push({ batch: 2, h: 6, w: 6, inC: 3, outC: 4, f: 1, stride: 1, pad: 'same' });
cases.push({ batch: 2, h: 11, w: 10, inC: 2, outC: 3, f: 3, stride: 3, pad: 'same' });
cases.push({ batch: 2, h: 11, w: 10, inC: 2, outC: 3, f: 3, stride: 3, pad: 'valid' });
cases.push({ batch: 1, h: 5, w: 6, inC: 2, outC: 3, f: 5, stride: 1, pad: 'valid' });
cases.push({ batch: 2, h: 10, w: 9, inC: 3, outC: 2, f: 3, stride: 4, pad: 'valid' });
// padding larger than the filter: Conv2DBackpropInput falls back to wasm's own kernel
cases.push({ batch: 2, h: 6, w: 7, inC: 2, outC: 3, f: 3, stride: 1, pad: [[0, 0], [3, 1], [1, 4], [0, 0]] });

describe('wasm Conv2DBackpropFilter and Conv2DBackpropInput', () => {
  beforeAll(async () => {
    await selectBackend('cpu');
    await selectBackend('wasm');
  });

  it.each(cases.map((c) => [JSON.stringify(c), c] as const))('match the cpu backend for %s', (_name, c) => {
    const cpu = gradients('cpu', c);
    const wasm = gradients('wasm', c);
    expect(wasm.filterShape).toEqual(cpu.filterShape);
    expect(maxRelativeError(cpu.filter, wasm.filter)).toBeLessThan(1e-4);
    expect(wasm.inputShape).toEqual(cpu.inputShape);
    expect(maxRelativeError(cpu.input, wasm.input)).toBeLessThan(1e-4);
  });

  it('are the registered wasm kernels', () => {
    for (const name of WASM_TRAINING_KERNELS) {
      const k = tf.getKernel(name, 'wasm');
      expect((k?.kernelFunc as unknown as Record<symbol, unknown>)[Symbol.for('histofed.wasmTrainingKernel')]).toBe(true);
    }
    expect(WASM_TRAINING_KERNELS).toEqual(['Conv2DBackpropFilter', 'Conv2DBackpropInput', 'MaxPoolGrad']);
  });

  const poolCases: { batch: number; h: number; w: number; c: number; f: number; stride: number; pad: 'same' | 'valid'; ties: boolean }[] = [];
  for (const [f, stride] of [
    [2, 2],
    [3, 2],
    [3, 1],
    [2, 1],
  ]) {
    for (const pad of ['same', 'valid'] as const) {
      for (const [h, w] of [
        [8, 8],
        [7, 9],
      ]) {
        for (const ties of [false, true]) poolCases.push({ batch: 2, h, w, c: 3, f, stride, pad, ties });
      }
    }
  }

  it.each(poolCases.map((c) => [JSON.stringify(c), c] as const))('MaxPoolGrad matches the cpu backend for %s', (_n, c) => {
    const run = (backend: string) => {
      void tf.setBackend(backend);
      return tf.tidy(() => {
        let xv = values(c.batch * c.h * c.w * c.c, 5 + c.h);
        // small integers: many ties within a window, as after a relu
        if (c.ties) xv = xv.map((v) => Math.max(0, Math.round(v * 2)));
        const x = tf.tensor4d(xv, [c.batch, c.h, c.w, c.c]);
        const y = tf.maxPool(x, c.f, c.stride, c.pad);
        const dy = tf.tensor4d(values(y.size, 17), y.shape as [number, number, number, number]);
        const dx = tf.engine().runKernel(tf.MaxPoolGrad, { dy, input: x, output: y }, {
          filterSize: c.f,
          strides: c.stride,
          pad: c.pad,
        } as unknown as tf.NamedAttrMap) as tf.Tensor;
        return dx.dataSync() as Float32Array;
      });
    };
    const cpu = run('cpu');
    const wasm = run('wasm');
    expect(maxRelativeError(cpu, wasm)).toBeLessThan(1e-6);
  });

  it('gives the same conv2d gradients as cpu through tf.grads (the path training uses)', () => {
    const run = (backend: string) => {
      void tf.setBackend(backend);
      return tf.tidy(() => {
        const x = tf.tensor4d(values(2 * 9 * 9 * 3, 3), [2, 9, 9, 3]);
        const filter = tf.tensor4d(values(3 * 3 * 3 * 4, 5), [3, 3, 3, 4]);
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
          const h = tf.relu(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same'));
          return tf.sum(tf.square(tf.maxPool(tf.conv2d(h, tf.ones([3, 3, 4, 2]), 1, 'same'), 2, 2, 'valid')));
        })([x, filter]);
        return g.map((t) => t.dataSync() as Float32Array);
      });
    };
    const cpu = run('cpu');
    const wasm = run('wasm');
    expect(maxRelativeError(cpu[0], wasm[0])).toBeLessThan(1e-4);
    expect(maxRelativeError(cpu[1], wasm[1])).toBeLessThan(1e-4);
  });

  it('frees every intermediate (no tensor or wasm memory growth)', () => {
    const c: Case = { batch: 3, h: 9, w: 9, inC: 4, outC: 2, f: 3, stride: 2, pad: 'same' };
    const pool = () =>
      tf.tidy(() => {
        const x = tf.tensor4d(values(2 * 7 * 7 * 3, 1), [2, 7, 7, 3]);
        tf.grad((t: tf.Tensor) => tf.sum(tf.maxPool(t as tf.Tensor4D, 2, 2, 'same')))(x).dataSync();
      });
    gradients('wasm', c);
    void tf.setBackend('wasm');
    pool();
    const before = tf.memory();
    for (let i = 0; i < 5; i++) {
      gradients('wasm', c);
      void tf.setBackend('wasm');
      pool();
    }
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    expect(after.numBytes).toBe(before.numBytes);
  });

  it('rejects NCHW and dilations other than 1 with a clear message', () => {
    const call = (attrs: Record<string, unknown>) =>
      tf.tidy(() => {
        const x = tf.zeros([1, 4, 4, 1]);
        const dy = tf.zeros([1, 4, 4, 1]);
        conv2DBackpropFilterWasm({
          inputs: { x, dy },
          backend: tf.findBackend('wasm'),
          attrs: { strides: [1, 1], pad: 'same', filterShape: [3, 3, 1, 1], ...attrs } as unknown as tf.NamedAttrMap,
        });
      });
    void tf.setBackend('wasm');
    expect(() => call({ dataFormat: 'NCHW' })).toThrow(/dataFormat 'NCHW' is not supported/);
    expect(() => call({ dataFormat: 'NHWC', dilations: [2, 2] })).toThrow(/dilations \[2,2\] are not supported/);
    expect(() =>
      tf.tidy(() => {
        conv2DBackpropInputWasm({
          inputs: { dy: tf.zeros([1, 4, 4, 1]), filter: tf.zeros([3, 3, 1, 1]) },
          backend: tf.findBackend('wasm'),
          attrs: { strides: [1, 1], pad: 'same', inputShape: [1, 4, 4, 1], dataFormat: 'NCHW' },
        });
      }),
    ).toThrow(/Conv2DBackpropInput \(wasm, HistoFed\): dataFormat 'NCHW'/);
  });
});
