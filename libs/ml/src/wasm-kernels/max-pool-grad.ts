/**
 * MaxPoolGrad on the SIMD kernels (simd-kernels.ts), for channel counts that are multiples of 4:
 * each output gradient goes to the first maximum of its window in row-major order, as in the cpu
 * backend (NaN and -Infinity windows send nothing). 2x2 windows at stride 2 without padding — the
 * models' pooling — store every dx value once (windows do not overlap; only the rows and columns
 * no window covers are zeroed first); other windows, strides and paddings accumulate into a zeroed
 * dx.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { SimdKernels } from './simd-kernels';
import { type WasmBackend, floatOffset, heapF32 } from './wasm-heap';

/** Whether maxPoolGradSimd handles this pooling (otherwise use another implementation). */
export function maxPoolGradSimdApplies(input: TensorInfo): boolean {
  return input.shape.length === 4 && input.shape[3] % 4 === 0;
}

export function maxPoolGradSimd(
  backend: WasmBackend,
  k: SimdKernels,
  dy: TensorInfo,
  input: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { batchSize, inHeight: inH, inWidth: inW, inChannels: c, outHeight: outH, outWidth: outW } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  const out = backend.makeOutput([...input.shape], 'float32');
  const heap = heapF32(backend); // after the allocation
  const x = 4 * floatOffset(backend, input);
  const g = 4 * floatOffset(backend, dy);
  const dxF = floatOffset(backend, out);
  const dx = 4 * dxF;
  const px = 4 * c; // bytes per pixel
  const line = px * inW;
  const image = line * inH;
  const tiled =
    fh === 2 && fw === 2 && sh === 2 && sw === 2 && top === 0 && left === 0 && 2 * outH <= inH && 2 * outW <= inW;
  if (tiled) {
    // Zero what no window covers: the rows from 2 outH and, in the others, the columns from 2 outW.
    for (let b = 0; b < batchSize; b++) {
      const img = dxF + b * inH * inW * c;
      heap.fill(0, img + 2 * outH * inW * c, img + inH * inW * c);
      if (2 * outW < inW) {
        for (let y = 0; y < 2 * outH; y++) heap.fill(0, img + (y * inW + 2 * outW) * c, img + (y + 1) * inW * c);
      }
    }
    for (let b = 0; b < batchSize; b++) {
      for (let oy = 0; oy < outH; oy++) {
        const row = b * image + 2 * oy * line;
        k.poolGrad2x2(x + row, g + ((b * outH + oy) * outW) * px, dx + row, c / 4, outW, line, px);
      }
    }
  } else {
    heap.fill(0, dxF, dxF + batchSize * inH * inW * c);
    for (let b = 0; b < batchSize; b++) {
      for (let oy = 0; oy < outH; oy++) {
        const dyRow = g + ((b * outH + oy) * outW) * px;
        for (let group = 0; group < c; group += 4) {
          const off = b * image + 4 * group;
          k.poolGrad(x + off, dyRow + 4 * group, dx + off, px, outW, inW, inH, fh, fw, sw, oy * sh - top, left);
        }
      }
    }
  }
  return out;
}
