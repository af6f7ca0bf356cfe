/**
 * Conv2DBackpropInput on HistoFed's SIMD kernels (simd-kernels.ts) from the nonzero values of dy,
 * for any stride and padding (NHWC, dilation 1, float32):
 *
 *   dx[b, y, x, ci] = sum over (kh, kw, oo) of dy[b, oy, ox, oo] * W[kh, kw, ci, oo]
 *                     where y = oy * sh + kh - top and x = ox * sw + kw - left.
 *
 * In the models every convolution is followed by relu and a 2x2 max pool, so at most a quarter of
 * its dy is nonzero (the pool gradient goes to one element of each window, the relu gradient
 * removes more): a dense convolution (the XNNPACK fallback) multiplies mostly zeros. Here, image by
 * image, dy's nonzeros are first listed per pixel (`nz_compress`: value and a precomputed offset
 * into the packed filter), then every dx pixel is gathered (`ig_V_T`) over its valid filter taps:
 * for each tap row, one walk over the lists of the run of dy pixels its taps read, each nonzero
 * adding value * (a row of up to 32 dx channels of the packed filter) to f32x4 accumulators held in
 * registers; dx is stored once. The packed filter is Wp[th][tw][oo][cp] = W[fh-1-th, fw-1-tw, ci, oo]
 * (rotated, output channel-major, cp = c rounded up to 4, zeros beyond c), so that the entry for
 * (ox, oo) carries the offset (sw * ox * o + oo) * cp * 4 and a dx pixel at x reads from a filter
 * base shifted by -x: consecutive taps of a tap row need no pointer changes.
 *
 * The products are summed in XNNPACK's order (taps, then output channels), and adding a zero
 * product leaves a float sum unchanged, so the results equal the fallback's (measured: identical).
 * Work is proportional to the nonzeros: slower than XNNPACK on dense dy, faster on sparse dy
 * (figures: bench/train/KERNELS.md). When the first image's dy is denser than
 * DEFAULT_MAX_DENSITY, or the filter has non-finite values (0 * Infinity is NaN, which skipping
 * zeros would not produce), this returns null and the caller takes the fallback.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import { IG_VECS, type SimdKernels } from './simd-kernels';
import { type WasmBackend, floatOffset, heapF32 } from './wasm-heap';

/**
 * Largest fraction of nonzeros in dy for which this kernel is used, below the measured break-even
 * against XNNPACK (~0.85); the measurements and the threshold's history: bench/train/KERNELS.md.
 */
const DEFAULT_MAX_DENSITY = 0.75;
/** Set for tests and benchmarks; undefined: the caller's default (DEFAULT_MAX_DENSITY unless given). */
let maxDensity: number | undefined;

/**
 * Sets the largest fraction of nonzero dy values for which the nonzero-gather kernel is used
 * (Infinity: always, for tests; 0: never); no argument restores the defaults.
 */
export function setConv2DBackpropInputMaxDensity(density?: number): void {
  maxDensity = density;
}

/** The taps of one output coordinate: count, first dy coordinate, first rotated tap index. */
interface Taps {
  n: number;
  first: number;
  t0: number;
}

/**
 * For each input coordinate (row or column) i, the taps k (descending, so that the dy coordinates
 * (i + pad - k) / s ascend by 1) with (i + pad - k) divisible by s and the dy coordinate in range.
 */
function tapsOf(size: number, f: number, s: number, pad: number, outSize: number): Taps[] {
  const taps: Taps[] = [];
  for (let i = 0; i < size; i++) {
    let n = 0;
    let first = 0;
    let t0 = 0;
    for (let k = f - 1; k >= 0; k--) {
      const d = i + pad - k;
      if (d < 0 || d % s !== 0 || d / s >= outSize) continue;
      if (n === 0) {
        first = d / s;
        t0 = f - 1 - k;
      }
      n++;
    }
    taps.push({ n, first, t0 });
  }
  return taps;
}

/** dx columns with the same taps, x = x0 + sw * j for j < n. */
interface Run {
  x0: number;
  n: number;
  taps: Taps;
}

function runsOf(cols: Taps[], sw: number): Run[] {
  const runs: Run[] = [];
  for (let phase = 0; phase < sw; phase++) {
    let run: Run | null = null;
    for (let x = phase; x < cols.length; x += sw) {
      const t = cols[x];
      if (run !== null && run.taps.n === t.n && run.taps.t0 === t.t0) {
        run.n++;
        continue;
      }
      run = { x0: x, n: 1, taps: t };
      runs.push(run);
    }
  }
  return runs;
}

/** Channel blocks of dx: up to 4 IG_VECS channels each. */
function channelBlocks(c: number): { start: number; vecs: number; tail: number }[] {
  const blocks: { start: number; vecs: number; tail: number }[] = [];
  for (let start = 0; start < c; start += 4 * IG_VECS) {
    const width = Math.min(4 * IG_VECS, c - start);
    blocks.push({ start, vecs: Math.ceil(width / 4), tail: width % 4 });
  }
  return blocks;
}

/**
 * dx, or null when dy is too dense (or the filter not finite) for this kernel to pay: denser than
 * `defaultLimit` on the first image, unless setConv2DBackpropInputMaxDensity set a limit.
 */
export function conv2DBackpropInputSimd(
  backend: WasmBackend,
  k: SimdKernels,
  dy: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
  defaultLimit = DEFAULT_MAX_DENSITY,
): TensorInfo | null {
  const { batchSize: batch, inHeight: inH, inWidth: inW, inChannels: c, outChannels: o } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const { outHeight: oh, outWidth: ow } = info;
  const { top, left } = info.padInfo;
  const limit = maxDensity ?? defaultLimit;
  if (limit <= 0) return null;
  const cp = 4 * Math.ceil(c / 4);
  const pixels = oh * ow;

  // The filter, checked for non-finite values, before anything is allocated.
  {
    const w = heapF32(backend);
    const wF = floatOffset(backend, filter);
    for (let i = wF, end = wF + fh * fw * c * o; i < end; i++) {
      if (!Number.isFinite(w[i])) return null;
    }
  }

  const out = backend.makeOutput([batch, inH, inW, c], 'float32');
  const packed = backend.makeOutput([fh * fw * o * cp], 'float32');
  const entries = backend.makeOutput([Math.max(1, 2 * pixels * o)], 'float32');
  const starts = backend.makeOutput([pixels + 1], 'int32');
  let keep = false;
  try {
    const heap = heapF32(backend); // after the allocations
    const outF = floatOffset(backend, out);
    if (batch * inH * inW * c === 0) {
      keep = true;
      return out;
    }
    if (pixels === 0 || o === 0) {
      heap.fill(0, outF, outF + batch * inH * inW * c);
      keep = true;
      return out;
    }
    // Wp[th][tw][oo][ci] = W[fh - 1 - th][fw - 1 - tw][ci][oo], zeros for ci >= c.
    const wF = floatOffset(backend, filter);
    const pF = floatOffset(backend, packed);
    for (let th = 0; th < fh; th++) {
      for (let tw = 0; tw < fw; tw++) {
        const src = wF + ((fh - 1 - th) * fw + (fw - 1 - tw)) * c * o;
        const dst = pF + (th * fw + tw) * o * cp;
        for (let oo = 0; oo < o; oo++) {
          for (let ci = 0; ci < cp; ci++) heap[dst + oo * cp + ci] = ci < c ? heap[src + ci * o + oo] : 0;
        }
      }
    }

    const rows = tapsOf(inH, fh, sh, top, oh);
    const runs = runsOf(tapsOf(inW, fw, sw, left, ow), sw);
    const blocks = channelBlocks(c);
    const heapI32 = new Int32Array(heap.buffer);
    const startsB = 4 * floatOffset(backend, starts);
    const entriesB = 4 * floatOffset(backend, entries);
    const packedB = 4 * pF;
    const dyB = 4 * floatOffset(backend, dy);
    const cp4 = 4 * cp;
    const wTh = sh * fw * o * cp4;
    const wPx = -sw * o * cp4;
    const outPx = 4 * c * sw;
    for (let b = 0; b < batch; b++) {
      const compress = o % 4 === 0 ? k.nzCompress4 : k.nzCompress;
      compress(dyB + 4 * b * pixels * o, entriesB, startsB, oh, ow, o, cp4, (sw - 1) * o * cp4);
      if (b === 0) {
        const nonzeros = (heapI32[startsB / 4 + pixels] - entriesB) / 8;
        if (nonzeros > limit * pixels * o) return null;
      }
      for (let y = 0; y < inH; y++) {
        const row = rows[y];
        const rowF = outF + (b * inH + y) * inW * c;
        for (const run of runs) {
          const { x0, n, taps } = run;
          if (row.n === 0 || taps.n === 0) {
            for (let j = 0; j < n; j++) heap.fill(0, rowF + (x0 + sw * j) * c, rowF + (x0 + sw * j + 1) * c);
            continue;
          }
          const sp = startsB + 4 * (row.first * ow + taps.first);
          const w0 = packedB + (row.t0 * fw + fw - 1 - x0 - left) * o * cp4;
          const outB = 4 * (rowF + x0 * c);
          for (const { start, vecs, tail } of blocks) {
            k.ig[vecs - 1][tail](sp, w0 + 4 * start, outB + 4 * start, n, row.n, 4 * taps.n, 4 * ow, wTh, wPx, outPx);
          }
        }
      }
    }
    keep = true;
    return out;
  } finally {
    if (!keep) backend.disposeData(out.dataId);
    backend.disposeData(packed.dataId);
    backend.disposeData(entries.dataId);
    backend.disposeData(starts.dataId);
  }
}
