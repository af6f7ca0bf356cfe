/**
 * The kernels of a squeeze-and-excitation gate on a float32 [b, ..., c] activation (c a multiple
 * of 4), on the SIMD kernels:
 *
 * - the squeeze, Mean over the spatial axes ([1, 2] of NHWC: tfjs-layers' GlobalAveragePooling2D),
 *   and its relative Sum over the same axes (tfjs-core's Multiply gradient for the gate operand:
 *   sum(dy * x, [1, 2])); wasm's own Sum and Mean transpose x first to bring the reduced axes
 *   innermost;
 * - the excitation, Multiply of x by a [b, 1, 1, c] gate (either operand order; also tfjs-core's
 *   Mean gradient, dy [b, 1, 1, c] times ones(x.shape), and the Multiply gradient dy * gate), which
 *   wasm's generic broadcasting Multiply does element by element with index arithmetic.
 *
 * The reductions add each image's rows in float32 in blocks of BLOCK_ROWS (one f32x4 per 4
 * channels), the blocks' sums in float64 (as accurate as the cpu backend's float64 sum); Mean
 * divides the float64 sum. Multiply does the same float32 products as wasm's Multiply: exact.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { SimdKernels } from './simd-kernels';
import { type WasmBackend, floatOffset, heapF32 } from './wasm-heap';

const BLOCK_ROWS = 512;

/**
 * Whether `axis` reduces exactly the middle axes (all but the first and the last: [1, 2] of NHWC)
 * of a float32 x of rank >= 3 whose last axis is a multiple of 4.
 */
export function isMiddleAxesReduction(x: TensorInfo, axis: number | number[]): boolean {
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank < 3 || x.shape[rank - 1] % 4 !== 0 || tf.util.sizeFromShape(x.shape) === 0) {
    return false;
  }
  const axes = [...new Set(tf.util.parseAxisParam(axis, x.shape))].sort((a, b) => a - b);
  return axes.length === rank - 2 && axes.every((a, i) => a === i + 1);
}

/** Sum (mean: true, Mean) of x [b, ..., c] over its middle axes -> [b, c] ([b, 1, ..., 1, c] with keepDims). */
export function middleAxesReduceSimd(
  backend: WasmBackend,
  k: SimdKernels,
  x: TensorInfo,
  keepDims: boolean,
  mean: boolean,
): TensorInfo {
  const rank = x.shape.length;
  const images = x.shape[0];
  const cols = x.shape[rank - 1];
  const rows = tf.util.sizeFromShape(x.shape) / (images * cols);
  const shape = keepDims ? [images, ...new Array<number>(rank - 2).fill(1), cols] : [images, cols];
  const out = backend.makeOutput(shape, 'float32');
  const block = backend.makeOutput([cols], 'float32');
  try {
    const acc = new Float64Array(images * cols);
    const src = 4 * floatOffset(backend, x);
    const blockF = floatOffset(backend, block);
    const heap = heapF32(backend); // after the allocations
    for (let b = 0; b < images; b++) {
      const image = src + 4 * b * rows * cols;
      for (let r0 = 0; r0 < rows; r0 += BLOCK_ROWS) {
        const n = Math.min(BLOCK_ROWS, rows - r0);
        heap.fill(0, blockF, blockF + cols);
        k.colSum(image + 4 * r0 * cols, 4 * blockF, n, cols / 4);
        for (let j = 0; j < cols; j++) acc[b * cols + j] += heap[blockF + j];
      }
    }
    if (mean) for (let i = 0; i < acc.length; i++) acc[i] /= rows;
    heap.set(acc, floatOffset(backend, out));
    return out;
  } finally {
    backend.disposeData(block.dataId);
  }
}

/**
 * For Multiply(a, b): the [b, ..., c] operand x and the gate when one is a float32 tensor of rank
 * >= 3 (c a multiple of 4) and the other a float32 [b, 1, ..., 1, c] or [1, 1, ..., 1, c] of the
 * same rank; else null.
 */
export function channelGateOperands(a: TensorInfo, b: TensorInfo): { x: TensorInfo; gate: TensorInfo } | null {
  const isGateOf = (x: TensorInfo, gate: TensorInfo) => {
    const rank = x.shape.length;
    const c = x.shape[rank - 1];
    return (
      x.dtype === 'float32' &&
      gate.dtype === 'float32' &&
      rank >= 3 &&
      c % 4 === 0 &&
      tf.util.sizeFromShape(x.shape) > 0 &&
      gate.shape.length === rank &&
      (gate.shape[0] === x.shape[0] || gate.shape[0] === 1) &&
      gate.shape[rank - 1] === c &&
      gate.shape.slice(1, -1).every((d) => d === 1) &&
      x.shape.slice(1, -1).some((d) => d !== 1) // else the shapes are equal or x is the broadcast one
    );
  };
  if (isGateOf(a, b)) return { x: a, gate: b };
  if (isGateOf(b, a)) return { x: b, gate: a };
  return null;
}

export function channelGateSimd(backend: WasmBackend, k: SimdKernels, x: TensorInfo, gate: TensorInfo): TensorInfo {
  const images = x.shape[0];
  const cols = x.shape[x.shape.length - 1];
  const rows = tf.util.sizeFromShape(x.shape) / (images * cols);
  const out = backend.makeOutput([...x.shape], 'float32');
  const src = 4 * floatOffset(backend, x);
  const g = 4 * floatOffset(backend, gate);
  const dst = 4 * floatOffset(backend, out);
  const gateStep = gate.shape[0] === 1 ? 0 : 4 * cols;
  const imageBytes = 4 * rows * cols;
  for (let b = 0; b < images; b++) k.rowMul(src + b * imageBytes, g + b * gateStep, dst + b * imageBytes, rows, cols / 4);
  return out;
}
