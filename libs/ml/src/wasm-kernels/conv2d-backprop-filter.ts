/**
 * Conv2DBackpropFilter on HistoFed's SIMD micro-kernels (simd-kernels.ts), for any stride and
 * padding (NHWC, dilation 1, float32):
 *
 *   dW[kh, kw, ci, o] = sum over (b, y, x) of xPad[b, y * sh + kh, x * sw + kw, ci] * dy[b, y, x, o]
 *
 * a product [fh * fw * c, N] x [N, o] (N = b * oh * ow) of the im2col matrix with dy, already in
 * the filter layout. The im2col matrix is never built: x is copied once, channel-major, into the
 * zero-padded grid it is read from (xT [c, b, hp, wp], `pad_transpose`), where im2col row
 * (kh, kw, ci) of output row (b, y) is the run xT[ci, b, y * sh + kh, kw + sw * (0 .. ow)]. The
 * micro-kernels take 4 such rows and 8 (4, 1) output channels of dy at a time, over chunks of
 * output rows of ~CHUNK_PIXELS pixels, whose xT rows and dy rows stay in the L2 cache while every
 * block of the chunk reads them. Partial sums are float32 within a chunk, added into dW per chunk.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type * as tf from '@tensorflow/tfjs-core';
import { FG_COLS, FG_ROWS, type SimdKernels } from './simd-kernels';
import { type WasmBackend, floatOffset, heapF32 } from './wasm-heap';

/**
 * Output pixels per micro-kernel call (whole output rows, at least one). 1024 to 8192 measure the
 * same at 64 and 128 px; the chunk's dy rows (up to 8192 x 64 channels x 4 bytes) stay in L2.
 */
const CHUNK_PIXELS = 2048;

export function conv2DBackpropFilterSimd(
  backend: WasmBackend,
  k: SimdKernels,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const [batch, inH, inW, c] = x.shape;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const { outHeight: oh, outWidth: ow, outChannels: o } = info;
  const { top, left } = info.padInfo;
  // The padded grid the convolution reads: its last window ends at row (oh - 1) * sh + fh - 1.
  const hp = (oh - 1) * sh + fh;
  const wp = (ow - 1) * sw + fw;
  const rowLen = Math.max(0, batch * hp * wp); // floats per channel of xT
  const rows = fh * fw * c;

  const out = backend.makeOutput([fh, fw, c, o], 'float32');
  const xT = backend.makeOutput([c, rowLen], 'float32');
  try {
    const heap = heapF32(backend); // after both allocations
    const xTf = floatOffset(backend, xT);
    const outF = floatOffset(backend, out);
    heap.fill(0, outF, outF + rows * o);
    if (batch === 0 || oh <= 0 || ow <= 0 || c === 0 || o === 0) return out; // nothing to sum: zeros
    heap.fill(0, xTf, xTf + c * rowLen);
    const copyRows = Math.max(0, Math.min(inH, hp - top));
    const copyCols = Math.max(0, Math.min(inW, wp - left));
    if (copyRows > 0 && copyCols > 0) {
      k.padTranspose(
        4 * floatOffset(backend, x),
        4 * (xTf + top * wp + left),
        batch,
        copyRows,
        copyCols,
        c,
        4 * inH * inW * c,
        4 * inW * c,
        4 * rowLen,
        4 * hp * wp,
        4 * wp,
      );
    }

    // im2col row r = (kh, kw, ci): its byte offset in xT from the chunk's first grid row (float64:
    // beyond 2^31 on a large heap).
    const rowOffset = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      const t = Math.floor(r / c);
      const ci = r - t * c;
      const kh = Math.floor(t / fw);
      const kw = t - kh * fw;
      rowOffset[r] = 4 * (ci * rowLen + kh * wp + kw);
    }
    // Column blocks of dy: 8s, then a 4, then single channels; one call per width.
    const widths: { start: number; width: number; blocks: number }[] = [];
    const eights = Math.floor(o / 8);
    const four = o % 8 >= 4 ? 1 : 0;
    if (eights > 0) widths.push({ start: 0, width: 8, blocks: eights });
    if (four > 0) widths.push({ start: 8 * eights, width: 4, blocks: 1 });
    if (o % 4 > 0) widths.push({ start: 8 * eights + 4 * four, width: 1, blocks: o % 4 });

    const chunkRows = Math.max(1, Math.min(oh, Math.round(CHUNK_PIXELS / ow)));
    const aStep = 4 * sw;
    const aSkip = 4 * (sh * wp - ow * sw);
    const rowBytes = 4 * o; // dy's pixel stride and dW's row stride
    const dyBase = 4 * floatOffset(backend, dy);
    const xTBase = 4 * xTf;
    const outBase = 4 * outF;
    for (let b = 0; b < batch; b++) {
      for (let y0 = 0; y0 < oh; y0 += chunkRows) {
        const n = Math.min(chunkRows, oh - y0);
        const gridRow = xTBase + 4 * (b * hp + y0 * sh) * wp;
        const dyRow = dyBase + 4 * (b * oh + y0) * ow * o;
        for (let r0 = 0; r0 < rows; r0 += FG_ROWS) {
          const nr = Math.min(FG_ROWS, rows - r0);
          const a0 = gridRow + rowOffset[r0];
          const a1 = nr > 1 ? gridRow + rowOffset[r0 + 1] : 0;
          const a2 = nr > 2 ? gridRow + rowOffset[r0 + 2] : 0;
          const a3 = nr > 3 ? gridRow + rowOffset[r0 + 3] : 0;
          for (const { start, width, blocks } of widths) {
            const fn = k.fg[nr - 1][FG_COLS.indexOf(width as (typeof FG_COLS)[number])];
            const d = dyRow + 4 * start;
            const dst = outBase + 4 * (r0 * o + start);
            if (nr === 4) fn(a0, a1, a2, a3, d, dst, blocks, n, ow, aStep, aSkip, rowBytes, rowBytes);
            else if (nr === 3) fn(a0, a1, a2, d, dst, blocks, n, ow, aStep, aSkip, rowBytes, rowBytes);
            else if (nr === 2) fn(a0, a1, d, dst, blocks, n, ow, aStep, aSkip, rowBytes, rowBytes);
            else fn(a0, d, dst, blocks, n, ow, aStep, aSkip, rowBytes, rowBytes);
          }
        }
      }
    }
    return out;
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    backend.disposeData(xT.dataId);
  }
}
