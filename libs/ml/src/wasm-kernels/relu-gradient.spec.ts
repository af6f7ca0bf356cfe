import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { selectBackend } from '../backend';
import { WASM_TRAINING_KERNELS, setWasmFastPathsEnabled, setWasmReluGradKernelEnabled } from '../wasm-training-kernels';
import { RELU_GRAD, reluGradKernelOn } from './relu-gradient';
import type { WasmBackend } from './wasm-heap';

/** Deterministic pseudo-random values in [lo, hi). */
function values(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = lo + ((s >>> 0) / 4294967296) * (hi - lo);
  }
  return out;
}

/** The values as comparable items: NaN as 'NaN', -0 as '-0' (toEqual then checks exact equality). */
function exact(a: ArrayLike<number>): (number | string)[] {
  return Array.from(a, (v) => (Number.isNaN(v) ? 'NaN' : Object.is(v, -0) ? '-0' : v));
}

function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let maxAbs = 0;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(a[i]), Math.abs(b[i]));
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
  }
  return maxAbs === 0 ? maxDiff : maxDiff / maxAbs;
}

/** 'fast': the RELU_GRAD kernel; 'off': tfjs-core's gradient with the other fast paths on; 'fallback': all off. */
const MODES = ['fast', 'off', 'fallback'] as const;
type Mode = (typeof MODES)[number];

function on<T>(backend: string, mode: Mode, f: () => T): T {
  const prev = tf.getBackend();
  void tf.setBackend(backend);
  setWasmFastPathsEnabled(mode !== 'fallback');
  setWasmReluGradKernelEnabled(mode !== 'off');
  try {
    return f();
  } finally {
    setWasmFastPathsEnabled(true);
    setWasmReluGradKernelEnabled(true);
    void tf.setBackend(prev);
  }
}

/** x with NaN, +-Infinity, +-0 and the smallest subnormals in every SIMD lane and the JS tail; dy with NaN, +-Infinity, -0. */
function inputs(shape: number[]): { x: Float32Array; dy: Float32Array } {
  const n = tf.util.sizeFromShape(shape);
  const x = values(n, 3 + n, -2, 2);
  const special = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0, -0, Math.fround(1e-45), Math.fround(-1e-45)];
  for (let i = 0; i < n; i += 3) x[i] = special[(i / 3) % special.length];
  const dy = values(n, 7 + n, -4, 4);
  for (let i = 1; i < n; i += 5) dy[i] = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0][((i - 1) / 5) % 4];
  return { x, dy };
}

function reluGradient(backend: string, mode: Mode, shape: number[]): Float32Array {
  const { x, dy } = inputs(shape);
  return on(backend, mode, () =>
    tf.tidy(() => tf.grad((t: tf.Tensor) => tf.relu(t))(tf.tensor(x, shape), tf.tensor(dy, shape)).dataSync() as Float32Array),
  );
}

const SHAPES = [[1], [3], [16], [17], [63], [64], [65], [3, 5, 7], [2, 9, 9, 4], [2, 14, 14, 24], [1, 13, 11, 3]];

describe('Relu gradient on wasm (HistoFedReluGrad)', () => {
  beforeAll(async () => {
    await selectBackend('cpu');
    await selectBackend('wasm');
  });

  it('is registered for wasm only, with the SIMD kernel available on this engine', () => {
    expect(WASM_TRAINING_KERNELS).toContain(RELU_GRAD);
    const k = tf.getKernel(RELU_GRAD, 'wasm');
    expect((k?.kernelFunc as unknown as Record<symbol, unknown>)[Symbol.for('histofed.wasmTrainingKernel')]).toBe(true);
    expect(tf.getKernel(RELU_GRAD, 'cpu')).toBeUndefined();
    const grad = tf.getGradient(tf.Relu);
    expect((grad?.gradFunc as unknown as Record<symbol, unknown>)[Symbol.for('histofed.wasmTrainingKernel')]).toBe(true);
    expect(reluGradKernelOn(tf.findBackend('wasm') as unknown as WasmBackend)).not.toBeNull();
  });

  it.each(SHAPES.map((s) => [`[${s}]`, s] as const))('tf.grad(relu) equals the cpu backend exactly for %s', (_n, shape) => {
    const cpu = exact(reluGradient('cpu', 'fast', shape));
    for (const mode of MODES) expect(exact(reluGradient('wasm', mode, shape))).toEqual(cpu);
  });

  it('covers NaN, infinities and signed zeros in the test data', () => {
    const g = reluGradient('cpu', 'fast', [3, 5, 7]);
    const e = exact(g);
    expect(e).toContain('NaN');
    expect(e).toContain('-0');
    expect(e).toContain(0);
    expect(g.some((v) => v === Number.POSITIVE_INFINITY || v === Number.NEGATIVE_INFINITY)).toBe(true);
  });

  it('runs one kernel on the fast path and tfjs-core composition otherwise', async () => {
    const kernels = async (mode: Mode) =>
      (await tf.profile(() => void reluGradient('wasm', mode, [2, 7, 7, 8]))).kernels.map((k) => k.name);
    const fast = await kernels('fast');
    expect(fast).toContain(RELU_GRAD);
    expect(fast).not.toContain('Step');
    for (const mode of ['off', 'fallback'] as const) {
      const names = await kernels(mode);
      expect(names).not.toContain(RELU_GRAD);
      expect(names).toEqual(expect.arrayContaining(['Step', 'Multiply']));
    }
  });

  it('gives a tfjs-layers model with relu activations and second-order gradients as cpu', () => {
    const model = (backend: string, mode: Mode) =>
      on(backend, mode, () => {
        const m = tfl.sequential();
        m.add(tfl.layers.dense({ inputShape: [6], units: 8 }));
        m.add(tfl.layers.reLU({}));
        m.add(tfl.layers.dense({ units: 5 }));
        m.add(tfl.layers.activation({ activation: 'relu' }));
        m.add(tfl.layers.dense({ units: 1 }));
        try {
          const w = tf.tidy(() => m.getWeights().map((t, i) => tf.tensor(values(t.size, 13 + i), t.shape)));
          m.setWeights(w);
          tf.dispose(w);
          return tf.tidy(() => {
            const x = tf.tensor2d(values(4 * 6, 17, -2, 2), [4, 6]);
            const vars = m.trainableWeights.map((v) => v.read() as tf.Variable);
            const { grads } = tf.variableGrads(() => tf.sum(tf.square(m.apply(x) as tf.Tensor)), vars);
            // d/dw of sum(c * d/dx sum(w * relu(x))) = c * step(x)
            const xs = tf.tensor2d(values(5 * 7, 41, -2, 2), [5, 7]);
            const c = tf.tensor2d(values(5 * 7, 43), [5, 7]);
            const second = tf.grad((w: tf.Tensor) => tf.sum(tf.mul(tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.relu(t), w)))(xs), c)));
            return [...vars.map((v) => grads[v.name].dataSync() as Float32Array), second(tf.onesLike(xs)).dataSync() as Float32Array];
          });
        } finally {
          m.dispose();
        }
      });
    const cpu = model('cpu', 'fast');
    for (const mode of MODES) {
      const wasm = model('wasm', mode);
      cpu.forEach((expected, i) => expect(maxRelativeError(expected, wasm[i])).toBeLessThan(1e-4));
    }
  });

  it('handles empty tensors and refuses other operands with a clear message', () => {
    for (const mode of MODES) {
      const g = on('wasm', mode, () => tf.tidy(() => tf.grad((t: tf.Tensor) => tf.relu(t))(tf.zeros([0, 3])).dataSync()));
      expect(g.length).toBe(0);
    }
    on('wasm', 'fast', () =>
      tf.tidy(() => {
        const call = (x: tf.Tensor, dy: tf.Tensor) => () => tf.engine().runKernel(RELU_GRAD, { x, dy });
        expect(call(tf.zeros([2, 3]), tf.zeros([3, 2]))).toThrow(/HistoFedReluGrad \(wasm, HistoFed\).*same shape/);
        expect(call(tf.zeros([2, 3], 'int32'), tf.zeros([2, 3]))).toThrow(/float32/);
      }),
    );
  });

  it('frees every intermediate (no tensor, data buffer or wasm memory growth)', () => {
    const all = () => {
      for (const mode of MODES) for (const s of SHAPES) reluGradient('wasm', mode, s);
    };
    const heap = () => (tf.findBackend('wasm') as unknown as WasmBackend).wasm.HEAPU8.length;
    all();
    void tf.setBackend('wasm');
    const before = { ...tf.memory(), heap: heap() };
    for (let i = 0; i < 3; i++) all();
    void tf.setBackend('wasm');
    const after = { ...tf.memory(), heap: heap() };
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    expect(after.numBytes).toBe(before.numBytes);
    expect(after.heap).toBe(before.heap);
  });
});
