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
 *
 * `conv2DBackpropFilterSparse` computes the same sum from dy's nonzeros only (in the models every
 * convolution is followed by relu and a 2x2 max pool: at most a quarter of dy is nonzero, 13-17 %
 * in training), image by image:
 *
 * - dy's nonzeros are listed per output channel (`nz_channels_4_G`, `nz_channels`: branch-free,
 *   each value written as an 8-byte entry (value, offset) and the channel's write position advanced
 *   past nonzeros only). The offset is that of the pixel's window in the padded image below:
 *   (y sh wp + x sw) c floats.
 * - x's image is copied into a zero-padded NHWC grid [hp, wp, c] (`copy_check`, which also flags
 *   Infinity and NaN), so that filter row kh of the window of output pixel (y, x) is the contiguous
 *   run of fw c floats at offset + kh wp c.
 * - For each output channel, a walk over its list adds value * (filter rows of the window) to
 *   f32x4 accumulators held in registers (`fgs_R_V`: R filter rows of V f32x4, up to FGS_ACCS),
 *   kept per channel as dWT [o, fh, 4 nv] (nv = ceil(fw c / 4); lanes past fw c read the next
 *   floats of the grid and are dropped) and transposed into dW at the end.
 *
 * Its time is ~2 cycles per dy value (the listing) plus the multiply-adds of the nonzeros, so it
 * pays below a density that depends on the layer, estimated by `breakEvenDensity`. When the first
 * image's dy is denser than that estimate, or x has a non-finite value (0 * Infinity is NaN, which
 * skipping zeros would lose), it returns null and the caller takes the dense kernel. Measured
 * break-even ~0.45 at 3 -> 16 channels, ~1 at 16 -> 32 and 32 -> 64 (the estimate is below it);
 * figures and the threshold's history: bench/train/KERNELS.md.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type * as tf from '@tensorflow/tfjs-core';
import { FG_COLS, FGS_ACCS, FG_ROWS, NZ_GROUPS, type SimdKernels } from './simd-kernels';
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

/** Largest fraction of nonzeros in dy for the sparse kernel; undefined: estimated per layer. */
let maxDensity: number | undefined;

/**
 * Sets the largest fraction of nonzero dy values for which Conv2DBackpropFilter's sparse kernel is
 * used (Infinity: always, for tests; 0: never, the dense kernel); no argument restores the default,
 * an estimate of the break-even density per layer shape (`breakEvenDensity`), below the measured one.
 */
export function setConv2DBackpropFilterMaxDensity(density?: number): void {
  maxDensity = density;
}

/**
 * The density of dy below which the sparse kernel is estimated to be faster than the dense one, in
 * cycles per dy value: the dense kernel's fh fw c multiply-adds (~0.3 cycles each, f32x4 at a time)
 * against listing the value (~2 cycles) and, for nonzeros, the multiply-adds of its tiles (fh 4 nv
 * lanes, ~0.3 each) and ~4 per tile walked. Measured break-even (128 px layers): ~0.45 at
 * 3 -> 16 channels (estimate 0.41), ~1 at 16 -> 32 and 32 -> 64 (0.75); bench/train/KERNELS.md.
 */
function breakEvenDensity(fh: number, fw: number, c: number, nv: number, tiles: number): number {
  return (0.3 * fh * fw * c - 2) / (0.3 * fh * 4 * nv + 4 * tiles);
}

/** Bytes of dy listed per nz_channels call (a block read once per band of 16 channels: in L1). */
const NZ_BLOCK_BYTES = 32768;

/** A tile of the filter gradient of one output channel: `rows` filter rows from r0, `vecs` f32x4 from v0. */
interface Tile {
  r0: number;
  rows: number;
  v0: number;
  vecs: number;
}

/** Tiles of up to FGS_ACCS f32x4 covering fh rows of nv f32x4 each. */
function tilesOf(fh: number, nv: number): Tile[] {
  const tiles: Tile[] = [];
  if (nv <= FGS_ACCS) {
    const rows = Math.min(fh, Math.floor(FGS_ACCS / nv));
    for (let r0 = 0; r0 < fh; r0 += rows) tiles.push({ r0, rows: Math.min(rows, fh - r0), v0: 0, vecs: nv });
    return tiles;
  }
  const blocks = Math.ceil(nv / FGS_ACCS);
  for (let r0 = 0; r0 < fh; r0++) {
    for (let j = 0; j < blocks; j++) {
      const v0 = Math.floor((j * nv) / blocks);
      tiles.push({ r0, rows: 1, v0, vecs: Math.floor(((j + 1) * nv) / blocks) - v0 });
    }
  }
  return tiles;
}

/**
 * The filter gradient from dy's nonzeros, or null when dy is too dense (measured on the first
 * image: denser than setConv2DBackpropFilterMaxDensity's limit if set, else than `defaultLimit`
 * if given, else than breakEvenDensity's estimate), x has non-finite values (0 * Infinity is NaN,
 * which skipping zeros would lose) or a size is 0: the caller then takes a dense kernel.
 */
export function conv2DBackpropFilterSparse(
  backend: WasmBackend,
  k: SimdKernels,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
  defaultLimit?: number,
): TensorInfo | null {
  const [batch, inH, inW, c] = x.shape;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const { outHeight: oh, outWidth: ow, outChannels: o } = info;
  const { top, left } = info.padInfo;
  if (maxDensity === 0 || batch === 0 || oh <= 0 || ow <= 0 || c === 0 || o === 0) return null;
  const hp = (oh - 1) * sh + fh;
  const wp = (ow - 1) * sw + fw;
  const pixels = oh * ow;
  const nv = Math.ceil((fw * c) / 4); // f32x4 per filter row (the last may run past it: slack)
  const imageFloats = hp * wp * c + 4;
  const capBytes = 8 * pixels + 64; // one channel's list area (+ a cache line: no set aliasing)
  const accFloats = o * fh * nv * 4; // dWT [o, fh, 4 nv]
  const tiles = tilesOf(fh, nv);
  const limit = maxDensity ?? defaultLimit ?? breakEvenDensity(fh, fw, c, nv, tiles.length);
  if (limit <= 0) return null;

  const out = backend.makeOutput([fh, fw, c, o], 'float32');
  const acc = backend.makeOutput([accFloats], 'float32');
  const image = backend.makeOutput([4 + imageFloats], 'float32'); // flag, then the padded image
  const entries = backend.makeOutput([(o * capBytes) / 4], 'float32');
  const tables = backend.makeOutput([2 * o], 'int32'); // list starts, list ends
  let keep = false;
  try {
    const heap = heapF32(backend); // after the allocations
    const heapI32 = new Int32Array(heap.buffer);
    const outF = floatOffset(backend, out);
    const accF = floatOffset(backend, acc);
    const flagF = floatOffset(backend, image);
    const imageF = flagF + 4;
    const tablesF = floatOffset(backend, tables);
    const entriesB = 4 * floatOffset(backend, entries);
    const startsB = 4 * tablesF;
    const endsB = startsB + 4 * o;
    heap.fill(0, accF, accF + accFloats);
    heap.fill(0, flagF, imageF + imageFloats);
    for (let oo = 0; oo < o; oo++) heapI32[tablesF + oo] = entriesB + oo * capBytes;

    const copyRows = Math.max(0, Math.min(inH, hp - top));
    const copyFloats = Math.max(0, Math.min(inW, wp - left)) * c;
    const xF = floatOffset(backend, x);
    const dyB = 4 * floatOffset(backend, dy);
    const xRow = 4 * wp * c;
    const outRow = 16 * nv;
    const blockRows = Math.max(1, Math.floor(NZ_BLOCK_BYTES / (4 * ow * o)));
    const offPx = 4 * sw * c;
    const offRowExtra = 4 * (sh * wp - ow * sw) * c;
    for (let b = 0; b < batch; b++) {
      heapI32.copyWithin(tablesF + o, tablesF, tablesF + o); // ends = starts: empty lists
      for (let y0 = 0; y0 < oh; y0 += blockRows) {
        const n = Math.min(blockRows, oh - y0);
        const src = dyB + 4 * (b * pixels + y0 * ow) * o;
        const off0 = 4 * y0 * sh * wp * c;
        if (o % 4 !== 0) {
          k.nzChannels(src, endsB, n, ow, o, offPx, offRowExtra, off0);
          continue;
        }
        for (let g0 = 0; g0 < o / 4; g0 += NZ_GROUPS) {
          const g = Math.min(NZ_GROUPS, o / 4 - g0);
          k.nzChannels4[g - 1](src + 16 * g0, endsB + 16 * g0, n, ow, 4 * o, offPx, offRowExtra, off0);
        }
      }
      if (b === 0) {
        let nonzeros = 0;
        for (let oo = 0; oo < o; oo++) nonzeros += (heapI32[tablesF + o + oo] - heapI32[tablesF + oo]) / 8;
        if (nonzeros > limit * pixels * o) return null;
      }
      if (copyRows > 0 && copyFloats > 0) {
        k.copyCheck(
          4 * (xF + b * inH * inW * c),
          4 * (imageF + (top * wp + left) * c),
          copyRows,
          copyFloats >> 2,
          copyFloats & 3,
          4 * inW * c,
          xRow,
          4 * flagF,
        );
        if ((heapI32[flagF] | heapI32[flagF + 1] | heapI32[flagF + 2] | heapI32[flagF + 3]) !== 0) return null;
      }
      for (const { r0, rows, v0, vecs } of tiles) {
        const fn = k.fgs[rows - 1][vecs - 1] as (...args: number[]) => void;
        fn(startsB, endsB, o, 4 * imageF + r0 * xRow + 16 * v0, 4 * accF + r0 * outRow + 16 * v0, xRow, outRow, fh * outRow);
      }
    }
    // dW[kh, kw, ci, oo] = dWT[oo, kh, kw * c + ci]
    for (let oo = 0; oo < o; oo++) {
      for (let kh = 0; kh < fh; kh++) {
        const src = accF + (oo * fh + kh) * nv * 4;
        const dst = outF + kh * fw * c * o + oo;
        for (let j = 0; j < fw * c; j++) heap[dst + j * o] = heap[src + j];
      }
    }
    keep = true;
    return out;
  } finally {
    if (!keep) backend.disposeData(out.dataId);
    backend.disposeData(acc.dataId);
    backend.disposeData(image.dataId);
    backend.disposeData(entries.dataId);
    backend.disposeData(tables.dataId);
  }
}
