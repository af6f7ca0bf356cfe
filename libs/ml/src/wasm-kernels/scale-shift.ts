/**
 * A per-channel affine map y = x * scale + shift of a float32 [..., c] tensor (HistoFed's
 * FrozenBatchNorm, backbones/frozen-batch-norm.ts: a MobileNetV2's frozen batch norm after every
 * convolution) and its gradient, each in one pass on the wasm backend, as two kernels of HistoFed's
 * own (registered for 'wasm' only, by registerWasmTrainingKernels):
 *
 * - `HistoFedScaleShift` (x, scale, shift) -> y = x * scale + shift: the same two float32 roundings
 *   as Multiply then Add (WebAssembly has no fused multiply-add), so the same values;
 * - `HistoFedScaleShiftGrad` (dy, x, scale) -> [dx, dScale, dShift]: dx = dy * scale,
 *   dScale = sum(dy * x) and dShift = sum(dy) over all axes but the last — what tfjs-core's Mul and
 *   Add gradients compute in four kernels (two Multiply, two Sum). The sums add each product (a
 *   float32, as Multiply's) row by row in float32 blocks of BLOCK_ROWS rows and the blocks in
 *   float64, exactly as the SIMD Sum (bias.ts) does: the same values as that composition on wasm.
 *
 * Fast path (float32, c a multiple of 4, WebAssembly SIMD): `scale_shift` and `scale_shift_grad`
 * assembled here, on the wasm backend's memory like simd-kernels.ts and off whenever those are
 * (setWasmFastPathsEnabled(false)). The kernels refuse other operands; the op in
 * wasm-training-kernels.ts (`channelScaleShift`) sends those, other backends and the fallbacks to
 * the tf composition add(mul(x, scale), shift).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import * as A from './wasm-asm';
import { overRows, simdModule } from './simd-kernels';
import type { KernelArgs, WasmBackend } from './wasm-heap';
import { floatOffset, heapF32 } from './wasm-heap';
import type { WasmFn } from './wasm-module';

/** The kernels' names (no tfjs op: called through tf.engine().runKernel). */
export const SCALE_SHIFT = 'HistoFedScaleShift';
export const SCALE_SHIFT_GRAD = 'HistoFedScaleShiftGrad';

/** Rows summed in float32 before the float64 sum (as bias.ts). */
const BLOCK_ROWS = 512;

const { get, set, v128Load, v128Store, f32x4Add, f32x4Mul } = A;

/** scale_shift(x, scale, shift, out, rows, groups): out row = x row * scale + shift (4 groups floats per row). */
function scaleShiftKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('scale_shift', new Array<A.ValType>(6).fill('i32'));
  const [x, scale, shift, out, rows, groups] = f.params;
  const [s, b] = [f.local('i32'), f.local('i32')];
  const body = [
    overRows(
      f,
      rows,
      groups,
      [
        [s, scale],
        [b, shift],
      ],
      [v128Store(get(out), f32x4Add(f32x4Mul(v128Load(get(x)), v128Load(get(s))), v128Load(get(b))))],
      [x, out, s, b],
    ),
  ];
  return { builder: f, body };
}

/**
 * scale_shift_grad(dy, x, scale, dx, sumS, sumB, rows, groups): per row, dx = dy * scale,
 * sumS += dy * x, sumB += dy (4 groups floats per row; sumS and sumB one row each).
 */
function scaleShiftGradKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('scale_shift_grad', new Array<A.ValType>(8).fill('i32'));
  const [dy, x, scale, dx, sumS, sumB, rows, groups] = f.params;
  const [s, ps, pb] = [f.local('i32'), f.local('i32'), f.local('i32')];
  const d = f.local('v128');
  const body = [
    overRows(
      f,
      rows,
      groups,
      [
        [s, scale],
        [ps, sumS],
        [pb, sumB],
      ],
      [
        set(d, v128Load(get(dy))),
        v128Store(get(dx), f32x4Mul(get(d), v128Load(get(s)))),
        v128Store(get(ps), f32x4Add(v128Load(get(ps)), f32x4Mul(get(d), v128Load(get(x))))),
        v128Store(get(pb), f32x4Add(v128Load(get(pb)), get(d))),
      ],
      [dy, x, dx, s, ps, pb],
    ),
  ];
  return { builder: f, body };
}

interface ScaleShiftKernels {
  readonly scaleShift: WasmFn;
  readonly scaleShiftGrad: WasmFn;
}

/**
 * The kernels on `backend`'s memory, or null where HistoFed's SIMD kernels are unavailable or
 * turned off (simd-kernels.ts decides, so setWasmFastPathsEnabled applies here too).
 */
export const scaleShiftKernelsOn: (backend: WasmBackend) => ScaleShiftKernels | null = simdModule<ScaleShiftKernels>({
  name: 'HistoFed scale-shift kernels',
  functions: () => [scaleShiftKernel(), scaleShiftGradKernel()],
  bind: (fn) => ({ scaleShift: fn('scale_shift'), scaleShiftGrad: fn('scale_shift_grad') }),
});

type Shaped = { readonly dtype: string; readonly shape: readonly number[] };

/**
 * Whether the kernels take these operands: float32 x of rank >= 1 whose last axis c is a positive
 * multiple of 4, float32 scale (and shift) of shape [c].
 */
export function scaleShiftApplies(x: Shaped, ...vectors: Shaped[]): boolean {
  const c = x.shape[x.shape.length - 1];
  return (
    x.dtype === 'float32' &&
    x.shape.length >= 1 &&
    c > 0 &&
    c % 4 === 0 &&
    vectors.every((v) => v.dtype === 'float32' && v.shape.length === 1 && v.shape[0] === c)
  );
}

function refuse(kernel: string, what: string): never {
  throw new Error(`${kernel} (wasm, HistoFed): ${what}`);
}

/** The SCALE_SHIFT kernel for the wasm backend (see the module comment). */
export function scaleShiftWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x, scale, shift } = args.inputs as { x: TensorInfo; scale: TensorInfo; shift: TensorInfo };
  if (!scaleShiftApplies(x, scale, shift)) {
    refuse(SCALE_SHIFT, `expected float32 x [..., c] (c a multiple of 4) and scale, shift [c]; got [${x.shape}], [${scale.shape}], [${shift.shape}]`);
  }
  const k = scaleShiftKernelsOn(backend);
  if (k === null) refuse(SCALE_SHIFT, 'the SIMD kernels are unavailable (use the tf composition)');
  const c = x.shape[x.shape.length - 1];
  const out = backend.makeOutput([...x.shape], 'float32');
  const rows = tf.util.sizeFromShape(x.shape) / c;
  if (rows > 0) {
    k.scaleShift(
      4 * floatOffset(backend, x),
      4 * floatOffset(backend, scale),
      4 * floatOffset(backend, shift),
      4 * floatOffset(backend, out),
      rows,
      c / 4,
    );
  }
  return out;
}

/** The SCALE_SHIFT_GRAD kernel for the wasm backend: [dx, dScale, dShift] (see the module comment). */
export function scaleShiftGradWasm(args: KernelArgs): TensorInfo[] {
  const backend = args.backend as WasmBackend;
  const { dy, x, scale } = args.inputs as { dy: TensorInfo; x: TensorInfo; scale: TensorInfo };
  if (!scaleShiftApplies(x, scale) || dy.dtype !== 'float32' || !tf.util.arraysEqual(dy.shape, x.shape)) {
    refuse(SCALE_SHIFT_GRAD, `expected float32 dy and x [..., c] of one shape (c a multiple of 4) and scale [c]; got [${dy.shape}], [${x.shape}], [${scale.shape}]`);
  }
  const k = scaleShiftKernelsOn(backend);
  if (k === null) refuse(SCALE_SHIFT_GRAD, 'the SIMD kernels are unavailable (use the tf composition)');
  const c = x.shape[x.shape.length - 1];
  const rows = tf.util.sizeFromShape(x.shape) / c;
  const dx = backend.makeOutput([...x.shape], 'float32');
  const dScale = backend.makeOutput([c], 'float32');
  const dShift = backend.makeOutput([c], 'float32');
  const block = backend.makeOutput([2 * c], 'float32'); // float32 sums of a block: dScale's, dShift's
  try {
    const blockF = floatOffset(backend, block);
    const totalS = new Float64Array(c);
    const totalB = new Float64Array(c);
    const dyB = 4 * floatOffset(backend, dy);
    const xB = 4 * floatOffset(backend, x);
    const dxB = 4 * floatOffset(backend, dx);
    const scaleB = 4 * floatOffset(backend, scale);
    let heap = heapF32(backend); // after the allocations
    for (let r0 = 0; r0 < rows; r0 += BLOCK_ROWS) {
      const n = Math.min(BLOCK_ROWS, rows - r0);
      heap.fill(0, blockF, blockF + 2 * c);
      const at = 4 * r0 * c;
      k.scaleShiftGrad(dyB + at, xB + at, scaleB, dxB + at, 4 * blockF, 4 * (blockF + c), n, c / 4);
      heap = heapF32(backend);
      for (let j = 0; j < c; j++) {
        totalS[j] += heap[blockF + j];
        totalB[j] += heap[blockF + c + j];
      }
    }
    heap.set(totalS, floatOffset(backend, dScale));
    heap.set(totalB, floatOffset(backend, dShift));
    return [dx, dScale, dShift];
  } catch (e) {
    for (const t of [dx, dScale, dShift]) backend.disposeData(t.dataId);
    throw e;
  } finally {
    backend.disposeData(block.dataId);
  }
}
