/**
 * The reduction of a [..., c] tensor over all axes but the last — the gradient of a bias added to
 * a convolution or matmul output (tfjs-core's Add / BiasAdd gradient: sum(dy, [0, 1, 2])) — on the
 * SIMD `col_sum` kernel. The wasm backend's own Sum reduces only innermost axes and transposes dy
 * to [c, b * h * w] first, which costs several times the sum itself.
 *
 * Rows are added in float32 in blocks of BLOCK_ROWS (one f32x4 per 4 channels), the blocks' sums in
 * float64: as accurate as the cpu backend's float64 sum to float32 rounding.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { SimdKernels } from './simd-kernels';
import { type WasmBackend, floatOffset, heapF32 } from './wasm-heap';

const BLOCK_ROWS = 512;

/** Whether `axis` reduces exactly the leading axes of x (all but the last) of a float32 [..., 4k] x. */
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
