/**
 * The gradient of ClipByValue in one pass on the wasm backend: the kernel `HistoFedClipByValueGrad`
 * (inputs x and dy, attributes clipValueMin and clipValueMax, as ClipByValue's) computes
 *
 *   dx[i] = dy[i] where clipValueMin <= x[i] <= clipValueMax, else 0
 *
 * which is what tfjs-core's gradient, where(logicalAnd(greaterEqual(x, min), lessEqual(x, max)), dy,
 * zerosLike(dy)), computes in five kernels (GreaterEqual, LessEqual, LogicalAnd, ZerosLike, Select),
 * each slow on wasm for its bool tensors. The same values: the bounds are compared as float32 (as
 * there, where they become float32 scalars), so x exactly at a bound passes, NaN x never does
 * (comparisons with NaN are false: 0), and dy is copied bit for bit where x passes (NaN and
 * infinite dy included) and replaced by +0 elsewhere. tfjs-layers' ReLU layer with maxValue
 * (Keras' ReLU6 of a MobileNetV2) is relu then clipByValue(0, maxValue), so fine-tuning a
 * MobileNetV2 runs this gradient after every expansion and depthwise convolution.
 *
 * Fast path (float32, WebAssembly SIMD): `clip_grad` assembled here (wasm-asm.ts), instantiated on
 * the wasm backend's memory like simd-kernels.ts and off whenever those are
 * (setWasmFastPathsEnabled(false)); 4 floats per f32x4 compare-and-mask, four f32x4 per loop
 * iteration, the last 0-3 floats in JavaScript. Otherwise a JavaScript loop over the heap, dy's
 * bits and'ed with the comparisons' mask as there (times of all three: bench/train/KERNELS.md). Other
 * dtypes and mismatched shapes are refused (the gradient function sends those to tfjs-core's
 * gradient, see wasm-training-kernels.ts).
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import { elementwiseGradApplies, elementwiseGradWasm } from './elementwise-grad';
import * as A from './wasm-asm';
import { simdModule } from './simd-kernels';
import type { KernelArgs, WasmBackend } from './wasm-heap';
import type { WasmFn } from './wasm-module';

/** The kernel's name (registered for 'wasm' only, by registerWasmTrainingKernels). */
export const CLIP_BY_VALUE_GRAD = 'HistoFedClipByValueGrad';

/** The attributes of CLIP_BY_VALUE_GRAD (those of ClipByValue). */
export interface ClipByValueGradAttrs {
  clipValueMin: number;
  clipValueMax: number;
}

const { get, set, i32, add, and, forLoop, v128Load, v128Store, v128And, f32x4Splat } = A;

/** f32x4.le and f32x4.ge (lanes all ones where true; false for NaN operands), not in wasm-asm.ts. */
const simdCompare =
  (opcode: number) =>
  (a: A.Code, b: A.Code): A.Code =>
  (out) => {
    a(out);
    b(out);
    out.push(0xfd, opcode); // opcodes below 0x80: one LEB128 byte
  };
const f32x4Le = simdCompare(0x45);
const f32x4Ge = simdCompare(0x46);

/** Bytes per iteration of the unrolled loop (four f32x4). */
const UNROLL_BYTES = 64;

/**
 * clip_grad(x, dy, out, bytes, lo, hi)
 *
 * For each f32x4 at byte offset o < bytes (a multiple of 16): out[o] = dy[o] & (x[o] >= lo &
 * x[o] <= hi), lane by lane; four f32x4 per iteration while a whole group of four remains.
 */
function clipGradKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('clip_grad', ['i32', 'i32', 'i32', 'i32', 'f32', 'f32']);
  const [x, dy, out, bytes, lo, hi] = f.params;
  const [o, end4] = [f.local('i32'), f.local('i32')];
  const [loV, hiV, v] = [f.local('v128'), f.local('v128'), f.local('v128')];
  const one = (offset: number): A.Code[] => [
    set(v, v128Load(add(get(x), get(o)), offset)),
    v128Store(
      add(get(out), get(o)),
      v128And(v128Load(add(get(dy), get(o)), offset), v128And(f32x4Ge(get(v), get(loV)), f32x4Le(get(v), get(hiV)))),
      offset,
    ),
  ];
  const unrolled: A.Code[] = [];
  for (let k = 0; k < UNROLL_BYTES; k += 16) unrolled.push(...one(k));
  return {
    builder: f,
    body: [
      set(loV, f32x4Splat(get(lo))),
      set(hiV, f32x4Splat(get(hi))),
      set(end4, and(get(bytes), i32(-UNROLL_BYTES))),
      forLoop(o, i32(0), get(end4), i32(UNROLL_BYTES), ...unrolled),
      // the remaining 0-3 f32x4 (o = end4 after the loop)
      whileBelow(o, bytes, one(0)),
    ],
  };
}

/** while (o < bytes) { body; o += 16 }, continuing from o's current value. */
function whileBelow(o: A.Local, bytes: A.Local, body: A.Code[]): A.Code {
  return A.block(A.loop(A.brIf(1, A.geU(get(o), get(bytes))), ...body, A.inc(o, i32(16)), A.br(0)));
}

/**
 * `clip_grad` on `backend`'s memory, or null where HistoFed's SIMD kernels are unavailable or
 * turned off (simd-kernels.ts decides, so setWasmFastPathsEnabled applies here too).
 */
export const clipGradKernelOn: (backend: WasmBackend) => WasmFn | null = simdModule({
  name: 'HistoFed clip_grad kernel',
  functions: () => [clipGradKernel()],
  bind: (fn) => fn('clip_grad'),
});

/** Whether CLIP_BY_VALUE_GRAD handles these operands: float32 x and dy of the same shape. */
export const clipByValueGradApplies = elementwiseGradApplies;

/**
 * The CLIP_BY_VALUE_GRAD kernel for the wasm backend: dy where clipValueMin <= x <= clipValueMax
 * (bounds as float32), else 0. float32 x and dy of the same shape only.
 */
export function clipByValueGradWasm(args: KernelArgs): TensorInfo {
  const { clipValueMin, clipValueMax } = (args.attrs ?? {}) as unknown as ClipByValueGradAttrs;
  const lo = Math.fround(clipValueMin);
  const hi = Math.fround(clipValueMax);
  return elementwiseGradWasm(args, CLIP_BY_VALUE_GRAD, clipGradKernelOn, 4, [lo, hi], (heap, xi, dyi, oi, done, n) => {
    // dy's bits masked as in clip_grad, without branches (a branch per element, mispredicted on
    // real data, made this loop 3x slower: bench/train/KERNELS.md).
    const bits = new Int32Array(heap.buffer);
    const xs = heap.subarray(xi, xi + n);
    const g = bits.subarray(dyi, dyi + n);
    const dx = bits.subarray(oi, oi + n);
    for (let i = done; i < n; i++) {
      const v = xs[i];
      dx[i] = g[i] & -(+(v >= lo) & +(v <= hi));
    }
  });
}
