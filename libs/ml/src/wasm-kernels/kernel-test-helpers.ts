/**
 * What the specs of HistoFed's wasm kernels share (wasm-kernels/*.spec.ts,
 * wasm-training-kernels.spec.ts): both backends loaded, seeded inputs, the test modes (the A/B
 * switches of wasm-training-kernels.ts), comparisons with the cpu backend and the leak check.
 * For tests only: not exported from libs/ml's index.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { selectBackend } from '../backend';
import {
  WASM_TRAINING_KERNELS,
  setConv2DBackpropFilterMaxDensity,
  setConv2DBackpropInputMaxDensity,
  setWasmDepthwiseForwardEnabled,
  setWasmFastPathsEnabled,
  setWasmPointwiseKernelsEnabled,
  setWasmReluGradKernelEnabled,
  setWasmScaleShiftKernelsEnabled,
} from '../wasm-training-kernels';
import type { WasmBackend } from './wasm-heap';

/** Loads the cpu and wasm backends (a spec's beforeAll): the kernels on wasm are compared with cpu. */
export async function loadCpuAndWasm(): Promise<void> {
  await selectBackend('cpu');
  await selectBackend('wasm');
}

/** The wasm backend, as the kernels see it. */
export function wasmBackend(): WasmBackend {
  return tf.findBackend('wasm') as unknown as WasmBackend;
}

/** Deterministic pseudo-random values in [lo, hi) (xorshift32 from `seed`). */
export function values(n: number, seed: number, lo = -1, hi = 1): Float32Array {
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

/**
 * The A/B switches of wasm-training-kernels.ts that a test mode sets; those left out stay at their
 * defaults (all on, the densities estimated).
 */
export interface Switches {
  /** setWasmFastPathsEnabled: false, every fallback. */
  fastPaths?: boolean;
  /** setWasmPointwiseKernelsEnabled */
  pointwise?: boolean;
  /** setWasmDepthwiseForwardEnabled */
  depthwiseForward?: boolean;
  /** setWasmScaleShiftKernelsEnabled */
  scaleShift?: boolean;
  /** setWasmReluGradKernelEnabled */
  reluGrad?: boolean;
  /**
   * setConv2DBackpropInputMaxDensity and setConv2DBackpropFilterMaxDensity: Infinity, the kernels
   * on dy's nonzeros however dense dy is; 0, never.
   */
  maxDensity?: number;
}

function setSwitches(s: Switches): void {
  setWasmFastPathsEnabled(s.fastPaths ?? true);
  setWasmPointwiseKernelsEnabled(s.pointwise ?? true);
  setWasmDepthwiseForwardEnabled(s.depthwiseForward ?? true);
  setWasmScaleShiftKernelsEnabled(s.scaleShift ?? true);
  setWasmReluGradKernelEnabled(s.reluGrad ?? true);
  setConv2DBackpropInputMaxDensity(s.maxDensity);
  setConv2DBackpropFilterMaxDensity(s.maxDensity);
}

/**
 * A spec's test modes, each a set of switches (in the order given): `on(backend, mode, f)` runs `f`
 * on `backend` (both backends are initialised already, so setBackend is synchronous) with the
 * mode's switches set, then sets every switch back to its default and the previous backend.
 */
export function testModes<M extends string>(
  switches: Record<M, Switches>,
): { modes: readonly M[]; on: <T>(backend: string, mode: M, f: () => T) => T } {
  const on = <T>(backend: string, mode: M, f: () => T): T => {
    const prev = tf.getBackend();
    void tf.setBackend(backend);
    setSwitches(switches[mode]);
    try {
      return f();
    } finally {
      setSwitches({});
      void tf.setBackend(prev);
    }
  };
  return { modes: Object.keys(switches) as M[], on };
}

/** Whether a kernel or gradient function is one of HistoFed's (registerWasmTrainingKernels marks them). */
export function isHistoFed(f: unknown): boolean {
  return (f as Record<symbol, unknown> | undefined)?.[Symbol.for('histofed.wasmTrainingKernel')] === true;
}

/**
 * Expects the kernel `name` among WASM_TRAINING_KERNELS and registered for wasm as HistoFed's; and
 * for HistoFed's own kernels (`own`, no tfjs op), for no other backend (not cpu).
 */
export function expectWasmKernel(name: string, own = false): void {
  expect(WASM_TRAINING_KERNELS).toContain(name);
  expect(isHistoFed(tf.getKernel(name, 'wasm')?.kernelFunc)).toBe(true);
  if (own) expect(tf.getKernel(name, 'cpu')).toBeUndefined();
}

/** Largest difference over the largest magnitude (NaN if either has NaN). */
export function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let maxAbs = 0;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(a[i]), Math.abs(b[i]));
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
  }
  return maxAbs === 0 ? maxDiff : maxDiff / maxAbs;
}

/** The values as comparable items: NaN as 'NaN', -0 as '-0' (toEqual then checks exact equality). */
export function exact(a: ArrayLike<number>): (number | string)[] {
  return Array.from(a, (v) => (Number.isNaN(v) ? 'NaN' : Object.is(v, -0) ? '-0' : v));
}

/**
 * NaN and infinities in the same places, the finite values within `tolerance` relative to the
 * largest; `what` names the values in a failure's message.
 */
export function expectClose(actual: Float32Array, expected: Float32Array, what = 'values', tolerance = 1e-4): void {
  expect(actual.length).toBe(expected.length);
  const kind = (v: number) => (Number.isNaN(v) ? 'nan' : Number.isFinite(v) ? 'finite' : v > 0 ? '+inf' : '-inf');
  const kinds = (a: Float32Array) => Array.from(a, kind).join(',');
  expect(`${what}: ${kinds(actual)}`).toBe(`${what}: ${kinds(expected)}`);
  const finite = (a: Float32Array) => a.map((v) => (Number.isFinite(v) ? v : 0));
  const err = maxRelativeError(finite(expected), finite(actual));
  if (!(err < tolerance)) throw new Error(`${what}: relative error ${err}`);
}

/**
 * Expects `run` on wasm in every mode to give the arrays it gives on cpu (in the first mode, the
 * defaults), each within 1e-4 relative.
 */
export function expectAsOnCpu<M extends string>(modes: readonly M[], run: (backend: string, mode: M) => Float32Array[]): void {
  const cpu = run('cpu', modes[0]);
  for (const mode of modes) {
    const wasm = run('wasm', mode);
    expect(wasm.length).toBe(cpu.length);
    cpu.forEach((expected, i) => expect(maxRelativeError(expected, wasm[i])).toBeLessThan(1e-4));
  }
}

/** What a convolution's two gradient kernels give (runGradientKernels; a type, so that tf.tidy may return it). */
export type Gradients = {
  filterShape: number[];
  filter: Float32Array;
  inputShape: number[];
  input: Float32Array;
};

/**
 * A convolution's filter and input gradient kernels (Conv2DBackpropFilter and Conv2DBackpropInput,
 * or the depthwise ones: `kernels`) for x, dy and the filter, run through the engine on the current
 * backend with `attrs` (strides, padding, ...) and the filter's and x's shapes.
 */
export function runGradientKernels(
  kernels: readonly [filter: string, input: string],
  x: tf.Tensor,
  dy: tf.Tensor,
  filter: tf.Tensor,
  attrs: Record<string, unknown>,
): Gradients {
  const df = tf.engine().runKernel(kernels[0], { x, dy }, {
    ...attrs,
    filterShape: filter.shape,
  } as unknown as tf.NamedAttrMap) as tf.Tensor;
  const dx = tf.engine().runKernel(kernels[1], { dy, filter }, {
    ...attrs,
    inputShape: x.shape,
  } as unknown as tf.NamedAttrMap) as tf.Tensor;
  return {
    filterShape: df.shape,
    filter: df.dataSync() as Float32Array,
    inputShape: dx.shape,
    input: dx.dataSync() as Float32Array,
  };
}

/** Sets `model`'s weights to seeded values: weight i to values(size, seed + i, lo, hi). */
export function setSeededWeights(model: LayersModel, seed: number, lo = -1, hi = 1): void {
  const weights = tf.tidy(() => model.getWeights().map((w, i) => tf.tensor(values(w.size, seed + i, lo, hi), w.shape)));
  model.setWeights(weights);
  tf.dispose(weights);
}

/**
 * The loss sum(square(model(x))) and its gradients for the model's trainable weights (`training`:
 * the model applied in training mode), as arrays: [loss, ...gradients]; the tensors are freed.
 */
export function lossAndGradients(model: LayersModel, x: () => tf.Tensor, training = false): Float32Array[] {
  return tf.tidy(() => {
    const input = x();
    const vars = model.trainableWeights.map((v) => v.read() as tf.Variable);
    const { value, grads } = tf.variableGrads(
      () => tf.sum(tf.square(model.apply(input, training ? { training: true } : {}) as tf.Tensor)),
      vars,
    );
    return [value.dataSync() as Float32Array, ...vars.map((v) => grads[v.name].dataSync() as Float32Array)];
  });
}

/**
 * Expects `all` to leave no tensor, data buffer or wasm memory behind: run once (first-use
 * allocations), then `repeats` times more with tf.memory() and the wasm heap's size unchanged.
 */
export function expectNoGrowth(all: () => void, repeats: number): void {
  const heap = () => wasmBackend().wasm.HEAPU8.length;
  all();
  void tf.setBackend('wasm');
  const before = { ...tf.memory(), heap: heap() };
  for (let i = 0; i < repeats; i++) all();
  void tf.setBackend('wasm');
  const after = { ...tf.memory(), heap: heap() };
  expect(after.numTensors).toBe(before.numTensors);
  expect(after.numDataBuffers).toBe(before.numDataBuffers);
  expect(after.numBytes).toBe(before.numBytes);
  expect(after.heap).toBe(before.heap);
}
