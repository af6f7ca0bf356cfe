/**
 * The gradient of Relu in one pass on the wasm backend: the kernel `HistoFedReluGrad` (inputs x and
 * dy) computes
 *
 *   dx[i] = dy[i] * step(x[i]),  step(x) = 1 for x > 0, NaN for NaN x, else 0
 *
 * which is tfjs-core's gradient, mul(dy, cast(step(x), 'float32')), in one kernel instead of two
 * passes over the activation (Step, then a same-shape Multiply; the Cast shares the data) with the
 * cpu backend's step (NaN for NaN x). The product is the same float32 multiplication: dy where
 * x > 0, +0 or -0 (the sign of dy) where x <= 0, NaN where x is NaN or where dy is infinite or NaN
 * and x <= 0 (0 * Infinity). tfjs-layers' ReLU layer (MobileNetV2's ReLU6 is relu, then
 * clipByValue) and Activation('relu') run this gradient; fused convolutions with a relu activation
 * have their own inside tfjs-core's fused gradient.
 *
 * Fast path (float32, WebAssembly SIMD): `relu_grad` assembled here, instantiated on the wasm
 * backend's memory like simd-kernels.ts and off whenever those are (setWasmFastPathsEnabled(false));
 * four f32x4 per iteration, the last floats in JavaScript (also the whole loop where WebAssembly
 * SIMD is missing). Other dtypes and mismatched shapes are refused (the gradient function in
 * wasm-training-kernels.ts sends those to tfjs-core's gradient).
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import { elementwiseGradApplies, elementwiseGradWasm } from './elementwise-grad';
import * as A from './wasm-asm';
import { simdModule } from './simd-kernels';
import type { KernelArgs, WasmBackend } from './wasm-heap';
import type { WasmFn } from './wasm-module';

/** The kernel's name (registered for 'wasm' only, by registerWasmTrainingKernels). */
export const RELU_GRAD = 'HistoFedReluGrad';

const { get, set, i32, f32, add, and, forLoop, v128Load, v128Store, bitselect, f32x4Splat, f32x4Gt, f32x4Ne, f32x4Mul } = A;

/** Bytes per iteration of the unrolled loop (four f32x4). */
const UNROLL_BYTES = 64;

/** relu_grad(x, dy, out, bytes): out = dy * step(x), f32x4 at a time over `bytes` (a multiple of 64). */
function reluGradKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('relu_grad', ['i32', 'i32', 'i32', 'i32']);
  const [x, dy, out, bytes] = f.params;
  const o = f.local('i32');
  const [v, one, zero] = [f.local('v128'), f.local('v128'), f.local('v128')];
  const unrolled: A.Code[] = [];
  for (let k = 0; k < UNROLL_BYTES; k += 16) {
    unrolled.push(
      set(v, v128Load(add(get(x), get(o)), k)),
      v128Store(
        add(get(out), get(o)),
        f32x4Mul(
          v128Load(add(get(dy), get(o)), k),
          // 1 where x > 0, x itself (NaN) where x is NaN, else 0
          bitselect(get(v), bitselect(get(one), get(zero), f32x4Gt(get(v), get(zero))), f32x4Ne(get(v), get(v))),
        ),
        k,
      ),
    );
  }
  return {
    builder: f,
    body: [
      set(one, f32x4Splat(f32(1))),
      set(zero, f32x4Splat(f32(0))),
      forLoop(o, i32(0), and(get(bytes), i32(-UNROLL_BYTES)), i32(UNROLL_BYTES), ...unrolled),
    ],
  };
}

/**
 * `relu_grad` on `backend`'s memory, or null where HistoFed's SIMD kernels are unavailable or
 * turned off (simd-kernels.ts decides, so setWasmFastPathsEnabled applies here too).
 */
export const reluGradKernelOn: (backend: WasmBackend) => WasmFn | null = simdModule({
  name: 'HistoFed relu_grad kernel',
  functions: () => [reluGradKernel()],
  bind: (fn) => fn('relu_grad'),
});

/** Whether RELU_GRAD handles these operands: float32 x and dy of the same shape. */
export const reluGradApplies = elementwiseGradApplies;

/** The RELU_GRAD kernel for the wasm backend: dy * step(x). float32 x and dy of the same shape only. */
export function reluGradWasm(args: KernelArgs): TensorInfo {
  return elementwiseGradWasm(args, RELU_GRAD, reluGradKernelOn, UNROLL_BYTES / 4, [], (heap, xi, dyi, oi, done, n) => {
    for (let i = done; i < n; i++) {
      const v = heap[xi + i];
      heap[oi + i] = heap[dyi + i] * (v > 0 ? 1 : Number.isNaN(v) ? Number.NaN : 0);
    }
  });
}
