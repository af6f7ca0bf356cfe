/**
 * The two halves of a bias on a [..., c] activation, on the SIMD kernels (c a multiple of 4):
 *
 * - the forward `x + bias` (tfjs-layers adds a convolution's or dense layer's bias with Add and a
 *   [c] bias), which wasm's general broadcasting Add does element by element;
 * - its gradient, the reduction of dy over all axes but the last (tfjs-core's Add gradient:
 *   sum(dy, [0, 1, 2])), which wasm's own Sum does only after transposing dy to [c, b * h * w].
 *
 * The sum adds rows in float32 in blocks of BLOCK_ROWS (one f32x4 per 4 channels), and the blocks'
 * sums in float64. The addition is exact (each element one float32 addition, as wasm's Add).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { SimdKernels } from './simd-kernels';
import { type WasmBackend, floatOffset, heapF32 } from './wasm-heap';

const BLOCK_ROWS = 512;

/** Whether `axis` reduces exactly the leading axes (all but the last) of a float32 [..., 4k] x. */
export function isLeadingAxesSum(x: TensorInfo, axis: number | number[]): boolean {
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank < 2 || x.shape[rank - 1] % 4 !== 0 || tf.util.sizeFromShape(x.shape) === 0) {
    return false;
  }
  const axes = [...new Set(tf.util.parseAxisParam(axis, x.shape))].sort((a, b) => a - b);
  return axes.length === rank - 1 && axes.every((a, i) => a === i);
}

export function leadingAxesSumSimd(backend: WasmBackend, k: SimdKernels, x: TensorInfo, keepDims: boolean): TensorInfo {
  const rank = x.shape.length;
  const cols = x.shape[rank - 1];
  const rows = tf.util.sizeFromShape(x.shape) / cols;
  const shape = keepDims ? [...new Array<number>(rank - 1).fill(1), cols] : [cols];
  const out = backend.makeOutput(shape, 'float32');
  const block = backend.makeOutput([cols], 'float32');
  try {
    const acc = new Float64Array(cols);
    const src = 4 * floatOffset(backend, x);
    const blockF = floatOffset(backend, block);
    const heap = heapF32(backend); // after the allocations
    for (let r0 = 0; r0 < rows; r0 += BLOCK_ROWS) {
      const n = Math.min(BLOCK_ROWS, rows - r0);
      heap.fill(0, blockF, blockF + cols);
      k.colSum(src + 4 * r0 * cols, 4 * blockF, n, cols / 4);
      for (let j = 0; j < cols; j++) acc[j] += heap[blockF + j];
    }
    heap.set(acc, floatOffset(backend, out));
    return out;
  } finally {
    backend.disposeData(block.dataId);
  }
}

/**
 * For Add(a, b): the [..., c] operand and the bias when one is a float32 [..., c] tensor (rank >= 2,
 * c a multiple of 4) and the other a float32 [c] (or [1, ..., 1, c] of no higher rank); else null.
 */
export function biasAddOperands(a: TensorInfo, b: TensorInfo): { x: TensorInfo; bias: TensorInfo } | null {
  const isBiasOf = (x: TensorInfo, bias: TensorInfo) => {
    const rank = x.shape.length;
    const c = x.shape[rank - 1];
    return (
      x.dtype === 'float32' &&
      bias.dtype === 'float32' &&
      rank >= 2 &&
      c % 4 === 0 &&
      tf.util.sizeFromShape(x.shape) > 0 &&
      bias.shape.length >= 1 &&
      bias.shape.length <= rank &&
      bias.shape[bias.shape.length - 1] === c &&
      bias.shape.slice(0, -1).every((d) => d === 1)
    );
  };
  if (isBiasOf(a, b)) return { x: a, bias: b };
  if (isBiasOf(b, a)) return { x: b, bias: a };
  return null;
}

export function biasAddSimd(backend: WasmBackend, k: SimdKernels, x: TensorInfo, bias: TensorInfo): TensorInfo {
  const cols = x.shape[x.shape.length - 1];
  const out = backend.makeOutput([...x.shape], 'float32');
  k.biasAdd(
    4 * floatOffset(backend, x),
    4 * floatOffset(backend, bias),
    4 * floatOffset(backend, out),
    tf.util.sizeFromShape(x.shape) / cols,
    cols / 4,
  );
  return out;
}
