import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {
  exact,
  expectAsOnCpu,
  expectNoGrowth,
  expectWasmKernel,
  isHistoFed,
  loadCpuAndWasm,
  lossAndGradients,
  setSeededWeights,
  testModes,
  values,
  wasmBackend,
} from './kernel-test-helpers';
import { RELU_GRAD, reluGradKernelOn } from './relu-gradient';

/** 'fast': the RELU_GRAD kernel; 'off': tfjs-core's gradient with the other fast paths on; 'fallback': all off. */
const { modes: MODES, on } = testModes({ fast: {}, off: { reluGrad: false }, fallback: { fastPaths: false } });
type Mode = (typeof MODES)[number];

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
  beforeAll(loadCpuAndWasm);

  it('is registered for wasm only, with the SIMD kernel available on this engine', () => {
    expectWasmKernel(RELU_GRAD, true);
    expect(isHistoFed(tf.getGradient(tf.Relu)?.gradFunc)).toBe(true);
    expect(reluGradKernelOn(wasmBackend())).not.toBeNull();
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
          setSeededWeights(m, 13);
          const grads = lossAndGradients(m, () => tf.tensor2d(values(4 * 6, 17, -2, 2), [4, 6])).slice(1);
          const second = tf.tidy(() => {
            // d/dw of sum(c * d/dx sum(w * relu(x))) = c * step(x)
            const xs = tf.tensor2d(values(5 * 7, 41, -2, 2), [5, 7]);
            const c = tf.tensor2d(values(5 * 7, 43), [5, 7]);
            const g = tf.grad((w: tf.Tensor) => tf.sum(tf.mul(tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.relu(t), w)))(xs), c)));
            return g(tf.onesLike(xs)).dataSync() as Float32Array;
          });
          return [...grads, second];
        } finally {
          m.dispose();
        }
      });
    expectAsOnCpu(MODES, model);
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
    expectNoGrowth(() => {
      for (const mode of MODES) for (const s of SHAPES) reluGradient('wasm', mode, s);
    }, 3);
  });
});
