/**
 * What HistoFed's one-pass elementwise gradients on the wasm backend (clip-gradient.ts,
 * relu-gradient.ts: dx[i] from x[i] and dy[i]) share: their operands, float32 x and dy of one shape
 * (others are refused with a clear message), and their course — dx allocated, the SIMD kernel over
 * the leading elements (a multiple of its chunk), JavaScript over the heap for the rest (all of them
 * where the SIMD kernel is unavailable or turned off).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { KernelArgs, WasmBackend } from './wasm-heap';
import { floatOffset, heapF32 } from './wasm-heap';
import type { WasmFn } from './wasm-module';

type Shaped = { dtype: string; shape: readonly number[] };

/** Whether an elementwise gradient kernel handles these operands: float32 x and dy of the same shape. */
export function elementwiseGradApplies(x: Shaped, dy: Shaped): boolean {
  return (
    x.dtype === 'float32' &&
    dy.dtype === 'float32' &&
    x.shape.length === dy.shape.length &&
    x.shape.every((d, i) => d === dy.shape[i])
  );
}

/**
 * The elementwise gradient kernel `name` for the wasm backend, on inputs x and dy: `simd` (on the
 * backend's memory, or null) computes the first n - n % chunk elements, called with the byte
 * addresses of x, dy and dx, their byte count, then `simdArgs`; `rest` computes dx from element
 * `from` to n in JavaScript, given the heap (a view taken after dx's allocation) and the float
 * indices of x, dy and dx.
 */
export function elementwiseGradWasm(
  args: KernelArgs,
  name: string,
  simd: (backend: WasmBackend) => WasmFn | null,
  chunk: number,
  simdArgs: readonly number[],
  rest: (heap: Float32Array, xi: number, dyi: number, oi: number, from: number, n: number) => void,
): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  if (!elementwiseGradApplies(x, dy)) {
    throw new Error(
      `${name} (wasm, HistoFed): expected float32 x and dy of the same shape, got ` +
        `${x.dtype} [${x.shape}] and ${dy.dtype} [${dy.shape}]`,
    );
  }
  const n = tf.util.sizeFromShape(x.shape);
  const out = backend.makeOutput([...x.shape], 'float32');
  if (n === 0) return out;
  const xi = floatOffset(backend, x);
  const dyi = floatOffset(backend, dy);
  const oi = floatOffset(backend, out);
  const kernel = simd(backend);
  let done = 0;
  if (kernel !== null) {
    done = n - (n % chunk);
    if (done > 0) kernel(4 * xi, 4 * dyi, 4 * oi, 4 * done, ...simdArgs);
  }
  // A view taken after the allocation above (an allocation may grow and detach the heap).
  rest(heapF32(backend), xi, dyi, oi, done, n);
  return out;
}
