/**
 * DepthwiseConv2dNativeBackpropFilter and DepthwiseConv2dNativeBackpropInput for the wasm backend
 * (tfjs-backend-wasm 4.22 has neither, so a MobileNetV2 could not be fine-tuned on it). NHWC, filter
 * [fh, fw, c, m], dy [b, oh, ow, c * m] (output channel c * m + mm), any stride and padding ('same',
 * 'valid', a number, explicit), dimRoundingMode, the cpu backend's semantics:
 *
 *   dW[kh, kw, c, mm] = sum over (b, oy, ox) of x[b, iy, ix, c] * dy[b, oy, ox, c * m + mm]
 *   dx[b, iy, ix, c]  = sum over (kh, kw, mm) of dy[b, oy, ox, c * m + mm] * W[kh, kw, c, mm]
 *   where iy = oy * sh + kh - top, ix = ox * sw + kw - left, both inside the input.
 *
 * The geometry (output size, padding) is tfjs-core's `computeConv2DInfo` (depthwise). As in the
 * cpu backend's kernels, dilations enter that geometry (through the effective filter size) but not
 * the taps: the cpu backend reads the undilated taps kh, kw, and so does this. tfjs-core's gradient
 * of depthwiseConv2d refuses dilations other than 1, so training never meets the difference.
 *
 * The valid taps of an output row (column) depend only on how close it is to the border: rows are
 * grouped into runs with the same taps (the interior, and a few rows at each border); for dx the
 * runs are per residue class of the stride (dx rows iy, iy + sh, ... read dy rows oy, oy + 1, ...
 * through the same taps). Each pair of a row run and a column run is one call of a kernel over
 * rows x cols pixels with a fixed tap list of T taps (9 for the interior of a 3x3 filter); no
 * per-pixel bounds checks, no padded copies (a padded zero times an infinite dy would be NaN,
 * which the cpu backend, skipping invalid taps, does not produce).
 *
 * Fast path (float32, channel multiplier 1, channels a multiple of 4: MobileNetV2's layers):
 * WebAssembly SIMD kernels assembled here (wasm-asm.ts) and instantiated on the wasm backend's
 * memory, like simd-kernels.ts, and off whenever those are (setWasmFastPathsEnabled(false)).
 * Channels go 4 at a time (f32x4):
 * - `dwf_T` (filter gradient): channel groups outermost; for each, T f32x4 accumulators in
 *   registers, acc[t] += x[pixel + tap t] * dy[pixel] while the call's pixels stream past, then
 *   added to the image's dW. Each image's dW (float32) is added into a float64 total, so the sums
 *   are about as accurate as the cpu backend's float64 ones.
 * - `dwi_T_A` (input gradient, more than PIXEL_MAJOR_TAPS taps): channel groups outermost, the T
 *   filter taps in registers, dx[pixel] = sum over t of dy[pixel + tap t] * W[t] (two interleaved
 *   partial sums), stored once (A = 0) or added to a previous chunk's (A = 1: more than MAX_TAPS
 *   valid taps, e.g. a 5x5 filter). `dwip_T_A` (1-4 taps: a stride-2 dx pixel of a 3x3 filter has
 *   1, 2 or 4) goes pixel by pixel with the channel groups innermost, writing dx in address order;
 *   `dwip_0_0` stores the zeros of dx pixels that no tap reaches.
 * Runs longer than PIXELS_PER_CALL pixels are split by rows, so that the rows a call reads stay in
 * the L1 cache while its channel groups sweep them. Both gradients take about the time of wasm's
 * forward DepthwiseConv2dNative (XNNPACK) of the same layer (bench/train/KERNELS.md).
 *
 * Everything else (channel multipliers > 1, channel counts not multiples of 4, int32 inputs, no
 * SIMD): the same runs in JavaScript over the heap, channels innermost, sums in float64.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import * as A from './wasm-asm';
import { simdModule } from './simd-kernels';
import type { KernelArgs, WasmBackend } from './wasm-heap';
import { floatOffset, heapF32 } from './wasm-heap';
import type { WasmFn } from './wasm-module';

type Shape4 = [number, number, number, number];

/** Largest tap count of one SIMD call (9: a 3x3 filter's interior in one pass). */
const MAX_TAPS = 9;
/**
 * Input-gradient calls with at most this many taps go pixel by pixel (dwip_T_A): measured faster
 * for the 1-4 taps of stride-2 dx pixels, slower than channel group by channel group with 9 taps
 * (bench/train/KERNELS.md).
 */
const PIXEL_MAJOR_TAPS = 4;
/** Pixels per SIMD call (rows x cols, at least one row): its x/dy rows stay in L1 across channel groups. */
const PIXELS_PER_CALL = 224;

// ---------------------------------------------------------------------------------------------
// Geometry

/**
 * A run of consecutive output coordinates o = start .. start + count - 1 (one axis) whose valid taps
 * are `taps` (k with 0 <= o * stride + k - pad < inSize): the filter gradient's rows and columns.
 */
interface OutRun {
  start: number;
  count: number;
  taps: number[];
}

function outputRuns(outSize: number, inSize: number, stride: number, pad: number, f: number): OutRun[] {
  const runs: OutRun[] = [];
  for (let o = 0; o < outSize; o++) {
    const taps: number[] = [];
    for (let k = 0; k < f; k++) {
      const i = o * stride + k - pad;
      if (i >= 0 && i < inSize) taps.push(k);
    }
    const last = runs[runs.length - 1];
    if (last !== undefined && sameList(last.taps, taps)) last.count++;
    else runs.push({ start: o, count: 1, taps });
  }
  return runs;
}

/**
 * A run of input coordinates i = start + j * stride (j < count) with the same valid taps: tap
 * taps[t] reads output coordinate first[t] + j (i + pad - k divisible by the stride, the output
 * coordinate inside [0, outSize)). The input gradient's rows and columns.
 */
interface InRun {
  start: number;
  count: number;
  taps: number[];
  first: number[];
}

function inputRuns(inSize: number, outSize: number, stride: number, pad: number, f: number): InRun[] {
  const runs: InRun[] = [];
  for (let r = 0; r < stride && r < inSize; r++) {
    let current: InRun | undefined;
    for (let i = r; i < inSize; i += stride) {
      const taps: number[] = [];
      const first: number[] = [];
      for (let k = 0; k < f; k++) {
        const d = i + pad - k;
        if (d >= 0 && d % stride === 0 && d / stride < outSize) {
          taps.push(k);
          first.push(d / stride);
        }
      }
      if (current !== undefined && sameList(current.taps, taps)) {
        current.count++;
      } else {
        current = { start: i, count: 1, taps, first };
        runs.push(current);
      }
    }
  }
  return runs;
}

function sameList(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

type DepthwiseGradientAttrs = tf.DepthwiseConv2dNativeBackpropFilterAttrs | tf.DepthwiseConv2dNativeBackpropInputAttrs;

function depthwiseInfo(
  xShape: readonly number[],
  filterShape: readonly number[],
  attrs: DepthwiseGradientAttrs,
): tf.backend_util.Conv2DInfo {
  const { strides, pad, dimRoundingMode } = attrs;
  const dilations = attrs.dilations ?? [1, 1];
  return tf.backend_util.computeConv2DInfo(
    xShape as Shape4,
    filterShape as Shape4,
    strides,
    dilations,
    pad,
    dimRoundingMode,
    true, // depthwise
  );
}

function checkRanks(kernel: string, shapes: readonly (readonly number[])[]): void {
  for (const s of shapes) {
    if (s.length !== 4) throw new Error(`${kernel} (wasm, HistoFed): expected rank-4 tensors and shapes, got [${s}]`);
  }
}

function checkOperands(kernel: string, info: tf.backend_util.Conv2DInfo, tensors: readonly TensorInfo[]): void {
  const where = `${kernel} (wasm, HistoFed)`;
  for (const t of tensors) {
    if (t.dtype !== 'float32' && t.dtype !== 'int32') {
      throw new Error(`${where}: only float32 (and int32) tensors are supported, got ${t.dtype}`);
    }
  }
  if (info.filterShape[2] !== info.inChannels) {
    throw new Error(
      `${where}: filter shape [${info.filterShape}] does not match the input's ${info.inChannels} channels`,
    );
  }
}

function checkDy(kernel: string, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): void {
  const [b, oh, ow, oc] = dy.shape;
  if (
    dy.shape.length !== 4 ||
    b !== info.batchSize ||
    oh !== info.outHeight ||
    ow !== info.outWidth ||
    oc !== info.outChannels
  ) {
    throw new Error(
      `${kernel} (wasm, HistoFed): dy shape [${dy.shape}] does not match the convolution output [${info.outShape}]`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// SIMD kernels

const { get, set, i32, f32, add, ne, loop, brIf, forLoop, inc, v128Load, v128Store } = A;
const { f32x4Add, f32x4Mul, f32x4Splat } = A;

/**
 * The pixel sweep of both kernels, from their parameters 1 to 7 (n, rows, c4, then the byte steps
 * of a pixel and of a row on either side): `sweep(...perPixel)` runs, for rows r < rows, the two
 * offsets (ox, oy) from (rx, ry) over n pixels, `perPixel` at each, then moves (rx, ry) a row on.
 */
function pixelSweep(f: A.FunctionBuilder) {
  const [, n, rows, , oxStep, oyStep, rxStep, ryStep] = f.params;
  const [rx, ry, ox, oy, r, p] = new Array(6).fill(0).map(() => f.local('i32'));
  const sweep = (...perPixel: A.Code[]): A.Code =>
    forLoop(
      r,
      i32(0),
      get(rows),
      i32(1),
      set(ox, get(rx)),
      set(oy, get(ry)),
      set(p, get(n)),
      loop(
        ...perPixel,
        inc(ox, get(oxStep)),
        inc(oy, get(oyStep)),
        set(p, add(get(p), i32(-1))),
        brIf(0, ne(get(p), i32(0))),
      ),
      inc(rx, get(rxStep)),
      inc(ry, get(ryStep)),
    );
  return { rx, ry, ox, oy, sweep };
}

/**
 * dwf_T(dy, n, rows, c4, xStep, dyStep, xRow, dyRow, x_0 .. x_{T-1}, dw_0 .. dw_{T-1})
 *
 * For each of c4 groups of 4 channels (byte offset g = 16 group): acc[t] = sum over rows r < rows,
 * pixels p < n of x_t[r xRow + p xStep + g] * dy[r dyRow + p dyStep + g] (f32x4), then
 * dw_t[g] += acc[t]. Addresses in bytes; n, rows and c4 at least 1.
 */
function filterKernel(taps: number): A.FunctionDef {
  const f = new A.FunctionBuilder(`dwf_${taps}`, new Array<A.ValType>(8 + 2 * taps).fill('i32'));
  const [dy, , , c4] = f.params;
  const x = f.params.slice(8, 8 + taps);
  const dw = f.params.slice(8 + taps);
  const acc = x.map(() => f.local('v128'));
  const d = f.local('v128');
  const [g, gEnd] = [f.local('i32'), f.local('i32')];
  // x at ox, dy at oy
  const { rx, ry, ox, oy, sweep } = pixelSweep(f);
  const perPixel: A.Code[] = [set(d, v128Load(add(get(dy), get(oy))))];
  for (let t = 0; t < taps; t++) {
    perPixel.push(set(acc[t], f32x4Add(get(acc[t]), f32x4Mul(v128Load(add(get(x[t]), get(ox))), get(d)))));
  }
  const perGroup: A.Code[] = [...acc.map((a) => set(a, f32x4Splat(f32(0)))), set(rx, get(g)), set(ry, get(g)), sweep(...perPixel)];
  for (let t = 0; t < taps; t++) {
    perGroup.push(v128Store(add(get(dw[t]), get(g)), f32x4Add(v128Load(add(get(dw[t]), get(g))), get(acc[t]))));
  }
  return {
    builder: f,
    body: [set(gEnd, A.shl(get(c4), i32(4))), forLoop(g, i32(0), get(gEnd), i32(16), ...perGroup)],
  };
}

/**
 * dwi_T_A(dx, n, rows, c4, dxStep, dyStep, dxRow, dyRow, dy_0 .. dy_{T-1}, w_0 .. w_{T-1})
 *
 * For each of c4 groups of 4 channels (byte offset g): w[t] = w_t[g] (f32x4, in registers); for
 * rows r < rows, pixels p < n: s = sum over t of dy_t[r dyRow + p dyStep + g] * w[t] (taps
 * alternating between two partial sums), dx[r dxRow + p dxStep + g] = s (A = 0) or += s (A = 1).
 *
 * dwip_T_A: the same, pixel by pixel, with the channel groups innermost and the filter taps loaded
 * from memory (L1) at every pixel: with few taps the work is writing dx, fastest in address order.
 * dwip_0_0 stores zeros (dx pixels that no tap reaches).
 */
function inputKernel(taps: number, accumulate: boolean, pixelMajor: boolean): A.FunctionDef {
  const kernelName = `${pixelMajor ? 'dwip' : 'dwi'}_${taps}_${accumulate ? 1 : 0}`;
  const f = new A.FunctionBuilder(kernelName, new Array<A.ValType>(8 + 2 * taps).fill('i32'));
  const [dx, , , c4] = f.params;
  const dyT = f.params.slice(8, 8 + taps);
  const wT = f.params.slice(8 + taps);
  const w = wT.map(() => f.local('v128'));
  const s0 = f.local('v128');
  const s1 = f.local('v128');
  const [g, gEnd, q] = [f.local('i32'), f.local('i32'), f.local('i32')];
  // rows x pixels, `perPixel` at (ox, oy) (dx's, dy's offsets); rows start at (rx, ry)
  const { rx, ry, ox, oy, sweep } = pixelSweep(f);
  // the products and their sum, at dy offset `at` (and filter offset g when pixel-major)
  const sum = (at: A.Local): A.Code[] => {
    if (taps === 0) return [set(s0, f32x4Splat(f32(0)))];
    const product = (t: number) =>
      f32x4Mul(v128Load(add(get(dyT[t]), get(at))), pixelMajor ? v128Load(add(get(wT[t]), get(g))) : get(w[t]));
    const code: A.Code[] = [set(s0, product(0))];
    if (taps > 1) code.push(set(s1, product(1)));
    for (let t = 2; t < taps; t++) {
      const s = t % 2 === 0 ? s0 : s1;
      code.push(set(s, f32x4Add(get(s), product(t))));
    }
    if (taps > 1) code.push(set(s0, f32x4Add(get(s0), get(s1))));
    return code;
  };
  const store = (at: A.Code): A.Code =>
    v128Store(add(get(dx), at), accumulate ? f32x4Add(v128Load(add(get(dx), at)), get(s0)) : get(s0));
  const body: A.Code[] = [set(gEnd, A.shl(get(c4), i32(4)))];
  if (pixelMajor) {
    body.push(
      set(rx, i32(0)),
      set(ry, i32(0)),
      sweep(
        forLoop(g, i32(0), get(gEnd), i32(16), set(q, add(get(oy), get(g))), ...sum(q), store(add(get(ox), get(g)))),
      ),
    );
  } else {
    body.push(
      forLoop(
        g,
        i32(0),
        get(gEnd),
        i32(16),
        ...w.map((wt, t) => set(wt, v128Load(add(get(wT[t]), get(g))))),
        set(rx, get(g)),
        set(ry, get(g)),
        sweep(...sum(oy), store(get(ox))),
      ),
    );
  }
  return { builder: f, body };
}

interface DepthwiseKernels {
  /** filter[T - 1]: dwf_T */
  readonly filter: readonly WasmFn[];
  /** input[T][A]: dwip_T_A for T <= PIXEL_MAJOR_TAPS, else dwi_T_A */
  readonly input: readonly (readonly WasmFn[])[];
}

/**
 * The depthwise kernels on `backend`'s memory, or null where HistoFed's SIMD kernels are
 * unavailable or turned off (simd-kernels.ts decides, so setWasmFastPathsEnabled applies here too).
 */
export const depthwiseKernels: (backend: WasmBackend) => DepthwiseKernels | null = simdModule<DepthwiseKernels>({
  name: 'HistoFed depthwise kernels',
  functions: () => {
    const defs: A.FunctionDef[] = [];
    for (let t = 1; t <= MAX_TAPS; t++) defs.push(filterKernel(t));
    for (let t = 0; t <= MAX_TAPS; t++) {
      const pixelMajor = t <= PIXEL_MAJOR_TAPS;
      defs.push(inputKernel(t, false, pixelMajor));
      if (t > 0) defs.push(inputKernel(t, true, pixelMajor));
    }
    return defs;
  },
  bind: (fn) => ({
    filter: Array.from({ length: MAX_TAPS }, (_x, t) => fn(`dwf_${t + 1}`)),
    input: Array.from({ length: MAX_TAPS + 1 }, (_x, t) => {
      const prefix = t <= PIXEL_MAJOR_TAPS ? 'dwip' : 'dwi';
      return t === 0 ? [fn(`${prefix}_0_0`)] : [fn(`${prefix}_${t}_0`), fn(`${prefix}_${t}_1`)];
    }),
  }),
});

/**
 * The SIMD calls over an image, the same for both gradients: each pair of a row run and a column
 * run, its rows split into calls of at most PIXELS_PER_CALL pixels (at least one row):
 * `call(rr, cr, r0, nRows)` for the rows r0 .. r0 + nRows - 1 of rr.
 */
function forEachCall<R extends { count: number }>(
  rowRuns: readonly R[],
  colRuns: readonly R[],
  call: (rr: R, cr: R, r0: number, nRows: number) => void,
): void {
  for (const rr of rowRuns) {
    for (const cr of colRuns) {
      const rowsMax = Math.max(1, Math.floor(PIXELS_PER_CALL / cr.count));
      for (let r0 = 0; r0 < rr.count; r0 += rowsMax) call(rr, cr, r0, Math.min(rowsMax, rr.count - r0));
    }
  }
}

/**
 * One call of dwf_T or dwi_T_A / dwip_T_A over rows x cols pixels from the address `at` (dy's,
 * dx's), with the tap lists a and b (x and dW, dy and W): their arguments c4 and the strides (a
 * pixel, a row) of both sides, from the geometry.
 */
function callKernel(
  fn: WasmFn,
  info: tf.backend_util.Conv2DInfo,
  at: number,
  cols: number,
  rows: number,
  a: readonly number[],
  b: readonly number[],
): void {
  const px = 4 * info.inChannels; // bytes per pixel
  fn(at, cols, rows, info.inChannels / 4, info.strideWidth * px, px, info.strideHeight * info.inWidth * px, info.outWidth * px, ...a, ...b);
}

/** Whether the SIMD kernels handle these tensors. */
function simdApplies(info: tf.backend_util.Conv2DInfo, tensors: TensorInfo[]): boolean {
  const multiplierOne = info.outChannels === info.inChannels;
  return multiplierOne && info.inChannels % 4 === 0 && tensors.every((t) => t.dtype === 'float32');
}

/**
 * A gradient's computation, on the SIMD kernels or in JavaScript, from its operands a and b:
 * [x, dy] for the filter gradient, [dy, filter] for the input gradient.
 */
type GradientSimd = (
  backend: WasmBackend,
  k: DepthwiseKernels,
  a: TensorInfo,
  b: TensorInfo,
  out: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
) => void;
type GradientLoop = (backend: WasmBackend, a: TensorInfo, b: TensorInfo, out: TensorInfo, info: tf.backend_util.Conv2DInfo) => void;

/**
 * What both gradient kernels do around their computation: the ranks checked (the operands', then
 * the output's shape, an attribute), the geometry from x's and the filter's shapes, the operands
 * and dy checked, the output allocated, then `simd` where the SIMD kernels apply, else `loop`.
 */
function depthwiseGradient(
  args: KernelArgs,
  name: string,
  operands: [TensorInfo, TensorInfo],
  outShape: readonly number[],
  [xShape, filterShape]: [readonly number[], readonly number[]],
  simd: GradientSimd,
  loop: GradientLoop,
): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { dy } = args.inputs as { dy: TensorInfo };
  const attrs = (args.attrs ?? {}) as unknown as DepthwiseGradientAttrs;
  const [a, b] = operands;
  checkRanks(name, [a.shape, b.shape, outShape]);
  const info = depthwiseInfo(xShape, filterShape, attrs);
  checkOperands(name, info, operands);
  checkDy(name, dy, info);

  const out = backend.makeOutput([...outShape], 'float32');
  const k = simdApplies(info, operands) ? depthwiseKernels(backend) : null;
  if (k !== null) simd(backend, k, a, b, out, info);
  else loop(backend, a, b, out, info);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Filter gradient

/**
 * DepthwiseConv2dNativeBackpropFilter for the wasm backend: dW [fh, fw, c, m] from x [b, h, w, c]
 * and dy [b, oh, ow, c * m], as the cpu backend computes it.
 */
export function depthwiseConv2dNativeBackpropFilterWasm(args: KernelArgs): TensorInfo {
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const { filterShape } = (args.attrs ?? {}) as unknown as tf.DepthwiseConv2dNativeBackpropFilterAttrs;
  const name = tf.DepthwiseConv2dNativeBackpropFilter;
  return depthwiseGradient(args, name, [x, dy], filterShape, [x.shape, filterShape], filterGradSimd, filterGradLoop);
}

function filterGradSimd(
  backend: WasmBackend,
  k: DepthwiseKernels,
  x: TensorInfo,
  dy: TensorInfo,
  out: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): void {
  const { batchSize, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const rowRuns = outputRuns(oh, h, sh, info.padInfo.top, fh);
  const colRuns = outputRuns(ow, w, sw, info.padInfo.left, fw);
  const size = fh * fw * c;
  const heap = heapF32(backend);
  const dwF = floatOffset(backend, out);
  const dwB = 4 * dwF;
  const xB = 4 * floatOffset(backend, x);
  const dyB = 4 * floatOffset(backend, dy);
  const px = 4 * c; // bytes per pixel
  const total = batchSize !== 1 ? new Float64Array(size) : null; // (batch 0: zeros)
  const xTaps: number[] = [];
  const dwTaps: number[] = [];
  for (let b = 0; b < batchSize; b++) {
    heap.fill(0, dwF, dwF + size);
    const xImg = xB + b * h * w * px;
    const dyImg = dyB + b * oh * ow * px;
    forEachCall(rowRuns, colRuns, (rr, cr, r0, nRows) => {
      const oy = rr.start + r0;
      xTaps.length = 0;
      dwTaps.length = 0;
      for (const kh of rr.taps) {
        const iy = oy * sh + kh - info.padInfo.top;
        for (const kw of cr.taps) {
          const ix = cr.start * sw + kw - info.padInfo.left;
          xTaps.push(xImg + (iy * w + ix) * px);
          dwTaps.push(dwB + (kh * fw + kw) * px);
        }
      }
      const dyAt = dyImg + (oy * ow + cr.start) * px;
      for (let t0 = 0; t0 < xTaps.length; t0 += MAX_TAPS) {
        const t1 = Math.min(xTaps.length, t0 + MAX_TAPS);
        callKernel(k.filter[t1 - t0 - 1], info, dyAt, cr.count, nRows, xTaps.slice(t0, t1), dwTaps.slice(t0, t1));
      }
    });
    if (total !== null) {
      const f = heapF32(backend);
      for (let i = 0; i < size; i++) total[i] += f[dwF + i];
    }
  }
  if (total !== null) heapF32(backend).set(total, dwF);
}

/** The filter gradient in JavaScript over the heap (any channel multiplier and count; float64 sums). */
function filterGradLoop(
  backend: WasmBackend,
  xInfo: TensorInfo,
  dyInfo: TensorInfo,
  out: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): void {
  const { batchSize, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow, outChannels: oc } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  const m = oc / c;
  const rowRuns = outputRuns(oh, h, sh, top, fh);
  const colRuns = outputRuns(ow, w, sw, left, fw);
  // Views taken after the output's allocation (an allocation may grow and detach the heap).
  const x = backend.typedArrayFromHeap(xInfo);
  const dy = backend.typedArrayFromHeap(dyInfo);
  const acc = new Float64Array(fh * fw * oc);
  for (let b = 0; b < batchSize; b++) {
    for (const rr of rowRuns) {
      for (const cr of colRuns) {
        for (const kh of rr.taps) {
          for (const kw of cr.taps) {
            const a0 = (kh * fw + kw) * oc;
            for (let oy = rr.start; oy < rr.start + rr.count; oy++) {
              const iy = oy * sh + kh - top;
              let xAt = ((b * h + iy) * w + cr.start * sw + kw - left) * c;
              let dyAt = ((b * oh + oy) * ow + cr.start) * oc;
              for (let j = 0; j < cr.count; j++, xAt += sw * c, dyAt += oc) {
                if (m === 1) {
                  for (let ci = 0; ci < c; ci++) acc[a0 + ci] += x[xAt + ci] * dy[dyAt + ci];
                } else {
                  for (let ci = 0; ci < c; ci++) {
                    const xv = x[xAt + ci];
                    const o = ci * m;
                    for (let mm = 0; mm < m; mm++) acc[a0 + o + mm] += xv * dy[dyAt + o + mm];
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  (backend.typedArrayFromHeap(out) as Float32Array).set(acc);
}

// ---------------------------------------------------------------------------------------------
// Input gradient

/**
 * DepthwiseConv2dNativeBackpropInput for the wasm backend: dx [b, h, w, c] (attr inputShape) from
 * dy [b, oh, ow, c * m] and the filter [fh, fw, c, m], as the cpu backend computes it.
 */
export function depthwiseConv2dNativeBackpropInputWasm(args: KernelArgs): TensorInfo {
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const { inputShape } = (args.attrs ?? {}) as unknown as tf.DepthwiseConv2dNativeBackpropInputAttrs;
  const name = tf.DepthwiseConv2dNativeBackpropInput;
  return depthwiseGradient(args, name, [dy, filter], inputShape, [inputShape, filter.shape], inputGradSimd, inputGradLoop);
}

/**
 * The forward depthwise convolution (DepthwiseConv2dNative) on the input-gradient kernels, or null
 * where they do not apply: with stride 1 and the padding centred (top = bottom = (fh - 1) / 2,
 * left = right = (fw - 1) / 2: 'same' with an odd filter), the correlation of x with W is the input
 * gradient of the same convolution for dy = x and the filter rotated by 180 degrees,
 *
 *   y[i, j] = sum over (kh, kw) of x[i - top + kh, j - left + kw] * W[kh, kw]
 *           = sum over (th, tw) of x[i + top - th, j + left - tw] * W[fh - 1 - th, fw - 1 - tw],
 *
 * which dwi_T_A computes faster than XNNPACK's DepthwiseConv2dNative (bench/train/KERNELS.md),
 * taps outside the image skipped as the cpu backend does (XNNPACK multiplies its zero
 * padding: NaN at the borders for infinite x). Also float32, dilation 1, multiplier 1, channels a
 * multiple of 4, and the SIMD kernels available.
 */
export function depthwiseConv2dForwardSimd(
  backend: WasmBackend,
  x: TensorInfo,
  filter: TensorInfo,
  attrs: tf.DepthwiseConv2dNativeAttrs,
): TensorInfo | null {
  if (x.shape.length !== 4 || filter.shape.length !== 4 || (attrs.dataFormat !== undefined && attrs.dataFormat !== 'NHWC')) {
    return null;
  }
  const dilations = attrs.dilations ?? [1, 1];
  if (!(typeof dilations === 'number' ? dilations === 1 : dilations.every((d) => d === 1))) return null;
  if (filter.shape[2] !== x.shape[3] || filter.shape[3] !== 1) return null;
  const info = depthwiseInfo(x.shape, filter.shape, { ...attrs, dilations } as unknown as tf.DepthwiseConv2dNativeBackpropInputAttrs);
  const { filterHeight: fh, filterWidth: fw } = info;
  const { top, bottom, left, right } = info.padInfo;
  const centred =
    info.strideHeight === 1 &&
    info.strideWidth === 1 &&
    fh % 2 === 1 &&
    fw % 2 === 1 &&
    top === (fh - 1) / 2 &&
    bottom === top &&
    left === (fw - 1) / 2 &&
    right === left &&
    info.outHeight === info.inHeight &&
    info.outWidth === info.inWidth;
  if (!centred || !simdApplies(info, [x, filter]) || tf.util.sizeFromShape(x.shape) === 0) return null;
  const k = depthwiseKernels(backend);
  if (k === null) return null;
  const c = info.inChannels;
  const out = backend.makeOutput([...info.outShape], 'float32');
  const rotated = backend.makeOutput([fh, fw, c, 1], 'float32');
  try {
    const heap = heapF32(backend); // after the allocations
    const w = floatOffset(backend, filter);
    const r = floatOffset(backend, rotated);
    for (let t = 0; t < fh * fw; t++) heap.copyWithin(r + t * c, w + (fh * fw - 1 - t) * c, w + (fh * fw - t) * c);
    inputGradSimd(backend, k, x, rotated, out, info);
    return out;
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    backend.disposeData(rotated.dataId);
  }
}

function inputGradSimd(
  backend: WasmBackend,
  k: DepthwiseKernels,
  dy: TensorInfo,
  filter: TensorInfo,
  out: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): void {
  const { batchSize, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const rowRuns = inputRuns(h, oh, sh, info.padInfo.top, fh);
  const colRuns = inputRuns(w, ow, sw, info.padInfo.left, fw);
  const dxB = 4 * floatOffset(backend, out);
  const dyB = 4 * floatOffset(backend, dy);
  const wB = 4 * floatOffset(backend, filter);
  const px = 4 * c;
  const dyTaps: number[] = [];
  const wTaps: number[] = [];
  for (let b = 0; b < batchSize; b++) {
    const dxImg = dxB + b * h * w * px;
    const dyImg = dyB + b * oh * ow * px;
    forEachCall(rowRuns, colRuns, (rr, cr, r0, nRows) => {
      const iy = rr.start + r0 * sh;
      const dxAt = dxImg + (iy * w + cr.start) * px;
      dyTaps.length = 0;
      wTaps.length = 0;
      rr.taps.forEach((kh, a) => {
        const oy = rr.first[a] + r0;
        cr.taps.forEach((kw, e) => {
          dyTaps.push(dyImg + (oy * ow + cr.first[e]) * px);
          wTaps.push(wB + (kh * fw + kw) * px);
        });
      });
      // (no taps: one call of dwip_0_0, zeros)
      for (let t0 = 0; t0 === 0 || t0 < dyTaps.length; t0 += MAX_TAPS) {
        const t1 = Math.min(dyTaps.length, t0 + MAX_TAPS);
        callKernel(k.input[t1 - t0][t0 === 0 ? 0 : 1], info, dxAt, cr.count, nRows, dyTaps.slice(t0, t1), wTaps.slice(t0, t1));
      }
    });
  }
}

/** The input gradient in JavaScript over the heap (any channel multiplier and count; float64 sums). */
function inputGradLoop(
  backend: WasmBackend,
  dyInfo: TensorInfo,
  filterInfo: TensorInfo,
  out: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): void {
  const { batchSize, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow, outChannels: oc } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const m = oc / c;
  const rowRuns = inputRuns(h, oh, sh, info.padInfo.top, fh);
  const colRuns = inputRuns(w, ow, sw, info.padInfo.left, fw);
  const dy = backend.typedArrayFromHeap(dyInfo);
  const wt = backend.typedArrayFromHeap(filterInfo);
  const dx = backend.typedArrayFromHeap(out) as Float32Array;
  const acc = new Float64Array(c);
  for (let b = 0; b < batchSize; b++) {
    for (const rr of rowRuns) {
      for (let i = 0; i < rr.count; i++) {
        const iy = rr.start + i * sh;
        for (const cr of colRuns) {
          for (let j = 0; j < cr.count; j++) {
            const ix = cr.start + j * sw;
            acc.fill(0);
            for (let a = 0; a < rr.taps.length; a++) {
              const dyRow = (b * oh + rr.first[a] + i) * ow;
              const wRow = rr.taps[a] * fw;
              for (let e = 0; e < cr.taps.length; e++) {
                const dyAt = (dyRow + cr.first[e] + j) * oc;
                const wAt = (wRow + cr.taps[e]) * oc;
                if (m === 1) {
                  for (let ci = 0; ci < c; ci++) acc[ci] += dy[dyAt + ci] * wt[wAt + ci];
                } else {
                  for (let ci = 0; ci < c; ci++) {
                    let s = 0;
                    for (let mm = 0, o = ci * m; mm < m; mm++, o++) s += dy[dyAt + o] * wt[wAt + o];
                    acc[ci] += s;
                  }
                }
              }
            }
            dx.set(acc, ((b * h + iy) * w + ix) * c);
          }
        }
      }
    }
  }
}
