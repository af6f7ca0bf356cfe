/**
 * HistoFed's own WebAssembly SIMD kernels, run on the tfjs wasm backend's heap.
 *
 * The module is assembled at first use (wasm-asm.ts) and instantiated on the wasm backend's
 * WebAssembly.Memory, so its functions read and write tensors in place, given byte addresses.
 * JavaScript drives the outer loops (images, blocks); the inner loops run here. Kernels:
 *
 * - `fg_R_K`: filter-gradient micro-kernels: R (1-4) rows of the im2col matrix (filter taps x
 *   input channels, each a strided run of the channel-major padded input) times blocks of K output
 *   channels of dy (8 or 4 as two or one f32x4, or 1 as a scalar), accumulated over the pixels of a
 *   run of output rows into dW [taps * c, o].
 * - `pad_transpose`: x NHWC -> channel-major rows inside a zero-padded grid (the im2col source).
 * - `nz_channels_4_G`, `nz_channels`, `copy_check` and `fgs_R_V`: the filter gradient from the
 *   nonzero values of dy (conv2d-backprop-filter.ts): dy's nonzeros listed per output channel, x's
 *   image copied into a zero-padded grid (flagging non-finite values), then for each channel a walk
 *   over its list, R filter rows of V f32x4 accumulators in registers.
 * - `pool_grad_2x2`: max-pool gradient for 2x2 windows at stride 2 (the models' pooling), and
 *   `pool_grad` for any window, stride and padding; 4 channels at a time, dy going to the first
 *   maximum of each window (the cpu backend's rule).
 * - `nz_compress` and `ig_V_T`: the input gradient of a convolution from the nonzero values of dy
 *   (conv2d-backprop-input.ts): dy's nonzeros listed per pixel, then each dx pixel gathered over
 *   its filter taps' lists, V f32x4 accumulators (4 V channels, T lanes of the last stored when T > 0).
 * - `col_sum`: adds the rows of a [rows, cols] matrix (cols a multiple of 4) into a [cols] row.
 * - `bias_add`: adds a [cols] row to every row of a [rows, cols] matrix; `row_mul` multiplies every
 *   row by it (an image of a [b, h, w, c] tensor by its [c] channel gate).
 *
 * Not every tfjs-backend-wasm build exposes its memory, and not every engine has WebAssembly
 * SIMD: when the module cannot be built or instantiated (wasm-module.ts), `simdKernels` returns
 * null and callers use their fallbacks. `simdModule` gives HistoFed's other SIMD modules the same
 * terms.
 */
import * as A from './wasm-asm';
import type { WasmBackend } from './wasm-heap';
import { type WasmFn, type WasmModuleSpec, wasmModule } from './wasm-module';

const { get, set, i32, f32, add, sub, mul, shl, and, or, eq, inc, ne, geU, ltU, minS, maxS, block, loop, brIf, forLoop } = A;
const { f32Load, f32Store, f32Add, f32Mul, f32Ne, i32Load, i32Store, v128Load, v128Store, load32Splat, bitselect } = A;
const { f32x4Add, f32x4Mul, f32x4Gt, f32x4Ne, f32x4Splat, f32x4ExtractLane, i32x4Splat, i32x4Eq, i32x4ExtractLane } = A;
const { v128And, v128AndNot, v128Or, i32x4Add, i8x16Shuffle, v128Store64Lane } = A;

/** Largest number of im2col rows per filter-gradient call, and the column widths (1 = scalar). */
export const FG_ROWS = 4;
export const FG_COLS = [8, 4, 1] as const;

/**
 * fg_R_K(a_0 .. a_{R-1}, dy, out, blocks, rows, ow, aStep, aSkip, dyStep, outStride)
 *
 * For each of `blocks` consecutive blocks of K output channels, over `rows` output rows of `ow`
 * pixels each: acc[r][k] += A_r[p] * dy[p][k]. A_r's pixel is at a_r, which advances by aStep bytes
 * per pixel and by aSkip more after each row; dy's pixel (the block's first channel) at dy + 4 K
 * block, advancing by dyStep bytes per pixel (rows contiguous). acc is read from and written back to
 * out + r * outStride + 4 K block (+ 4 k). ow must be at least 1.
 */
function filterGradKernel(rows: number, cols: number): A.FunctionDef {
  const f = new A.FunctionBuilder(`fg_${rows}_${cols}`, new Array<A.ValType>(rows + 9).fill('i32'));
  const a0 = f.params.slice(0, rows);
  const [dy0, out0, blocks, nRows, ow, aStep, aSkip, dyStep, outStride] = f.params.slice(rows);
  const scalar = cols === 1;
  const vecs = scalar ? 1 : cols / 4;
  const type: A.ValType = scalar ? 'f32' : 'v128';
  const acc = Array.from({ length: rows }, () => Array.from({ length: vecs }, () => f.local(type)));
  const d = Array.from({ length: vecs }, () => f.local(type));
  const s = f.local(type);
  const a = a0.map(() => f.local('i32'));
  const [dy, block, px, row, o] = new Array(5).fill(0).map(() => f.local('i32'));
  const load = (addr: A.Code, offset: number) => (scalar ? f32Load(addr, offset) : v128Load(addr, offset));
  const store = (addr: A.Code, value: A.Code, offset: number) =>
    scalar ? f32Store(addr, value, offset) : v128Store(addr, value, offset);
  const multiplyAdd = (x: A.Local, y: A.Local, z: A.Local) =>
    set(x, scalar ? f32Add(get(x), f32Mul(get(y), get(z))) : f32x4Add(get(x), f32x4Mul(get(y), get(z))));

  const perBlock: A.Code[] = [];
  // this block's dy and out columns; A's rows from their starts
  perBlock.push(set(dy, add(get(dy0), mul(get(block), i32(4 * cols)))));
  for (let r = 0; r < rows; r++) perBlock.push(set(a[r], get(a0[r])));
  perBlock.push(set(o, add(get(out0), mul(get(block), i32(4 * cols)))));
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vecs; v++) perBlock.push(set(acc[r][v], load(get(o), 16 * v)));
    if (r < rows - 1) perBlock.push(inc(o, get(outStride)));
  }
  const perPixel: A.Code[] = [];
  for (let v = 0; v < vecs; v++) perPixel.push(set(d[v], load(get(dy), 16 * v)));
  for (let r = 0; r < rows; r++) {
    perPixel.push(set(s, scalar ? f32Load(get(a[r])) : load32Splat(get(a[r]))));
    for (let v = 0; v < vecs; v++) perPixel.push(multiplyAdd(acc[r][v], s, d[v]));
  }
  for (let r = 0; r < rows; r++) perPixel.push(inc(a[r], get(aStep)));
  perPixel.push(inc(dy, get(dyStep)), set(px, sub(get(px), i32(1))));
  perBlock.push(
    forLoop(
      row,
      i32(0),
      get(nRows),
      i32(1),
      set(px, get(ow)),
      loop(...perPixel, brIf(0, ne(get(px), i32(0)))),
      ...a.map((ar) => inc(ar, get(aSkip))),
    ),
  );
  perBlock.push(set(o, add(get(out0), mul(get(block), i32(4 * cols)))));
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vecs; v++) perBlock.push(store(get(o), get(acc[r][v]), 16 * v));
    if (r < rows - 1) perBlock.push(inc(o, get(outStride)));
  }
  return { builder: f, body: [forLoop(block, i32(0), get(blocks), i32(1), ...perBlock)] };
}

/**
 * pad_transpose(src, dst, images, rows, cols, c, srcImage, srcLine, rowStride, imageStride, lineStride)
 *
 * Scatters `rows` x `cols` pixels of each of `images` NHWC images (c channels; image and line byte
 * strides srcImage, srcLine at src) into c channel rows: pixel (b, y, x), channel ci goes to
 * dst + ci * rowStride + b * imageStride + y * lineStride + 4 x. dst is the address of pixel
 * (0, 0, 0) of channel 0 in the padded grid (after the padding before it).
 */
function padTransposeKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('pad_transpose', new Array<A.ValType>(11).fill('i32'));
  const [src, dst, images, rows, cols, c, srcImage, srcLine, rowStride, imageStride, lineStride] = f.params;
  const [b, y, x, ci, s, p] = new Array(6).fill(0).map(() => f.local('i32'));
  const body = [
    forLoop(
      b,
      i32(0),
      get(images),
      i32(1),
      forLoop(
        y,
        i32(0),
        get(rows),
        i32(1),
        set(s, add(add(get(src), mul(get(b), get(srcImage))), mul(get(y), get(srcLine)))),
        forLoop(
          x,
          i32(0),
          get(cols),
          i32(1),
          set(p, add(add(get(dst), mul(get(b), get(imageStride))), add(mul(get(y), get(lineStride)), shl(get(x), i32(2))))),
          forLoop(
            ci,
            i32(0),
            get(c),
            i32(1),
            f32Store(get(p), f32Load(get(s))),
            inc(s, i32(4)),
            inc(p, get(rowStride)),
          ),
        ),
      ),
    ),
  ];
  return { builder: f, body };
}

const negInf = f32x4Splat(f32(Number.NEGATIVE_INFINITY));

/**
 * pool_grad_2x2(x, dy, dx, groups, outW, lineBytes, pxBytes)
 *
 * One output row of one image for 2x2 windows at stride 2 inside the image. x and dx point at the
 * window row's first pixel, dy at the output row's; `groups` channel groups of 4. The window's
 * four dx values are stored (windows do not overlap): dy at the first maximum, 0 elsewhere. A
 * later element takes over when strictly greater than the maximum so far (from -Infinity), so
 * NaN and -Infinity never do and an all-NaN window sends nothing.
 */
function poolGrad2x2Kernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('pool_grad_2x2', new Array<A.ValType>(7).fill('i32'));
  const [x, dy, dx, groups, outW, lineBytes, pxBytes] = f.params;
  const [ox, k, px, pd] = [f.local('i32'), f.local('i32'), f.local('i32'), f.local('i32')];
  const best = f.local('v128');
  const g = f.local('v128');
  const v = [0, 1, 2, 3].map(() => f.local('v128'));
  const m = [0, 1, 2, 3].map(() => f.local('v128'));
  // Window element i (row-major) of the window whose top-left pixel is at `base`.
  const at = (i: number, base: A.Local): A.Code => {
    const row = i < 2 ? get(base) : add(get(base), get(lineBytes));
    return i % 2 === 0 ? row : add(row, get(pxBytes));
  };
  const perGroup: A.Code[] = [];
  for (let i = 0; i < 4; i++) perGroup.push(set(v[i], v128Load(at(i, px))));
  perGroup.push(set(m[0], f32x4Gt(get(v[0]), negInf)), set(best, bitselect(get(v[0]), negInf, get(m[0]))));
  for (let i = 1; i < 4; i++) {
    perGroup.push(set(m[i], f32x4Gt(get(v[i]), get(best))));
    if (i < 3) perGroup.push(set(best, bitselect(get(v[i]), get(best), get(m[i]))));
    for (let j = 0; j < i; j++) perGroup.push(set(m[j], v128AndNot(get(m[j]), get(m[i]))));
  }
  perGroup.push(set(g, v128Load(get(dy))));
  for (let i = 0; i < 4; i++) perGroup.push(v128Store(at(i, pd), v128And(get(g), get(m[i]))));
  perGroup.push(inc(px, i32(16)), inc(pd, i32(16)), inc(dy, i32(16)));
  const body = [
    forLoop(
      ox,
      i32(0),
      get(outW),
      i32(1),
      set(px, get(x)),
      set(pd, get(dx)),
      forLoop(k, i32(0), get(groups), i32(1), ...perGroup),
      inc(x, shl(get(pxBytes), i32(1))),
      inc(dx, shl(get(pxBytes), i32(1))),
    ),
  ];
  return { builder: f, body };
}

/**
 * pool_grad(x, dy, dx, pxBytes, outW, inW, inH, fh, fw, sw, yStart, left)
 *
 * One output row of one image, one group of 4 channels, any window, stride and padding: for each
 * output pixel the window rows [max(yStart, 0), min(yStart + fh, inH)) and columns
 * [max(ox * sw - left, 0), min(ox * sw - left + fw, inW)) are scanned twice — for the index of the
 * first maximum (as in pool_grad_2x2), then to add dy there. x and dx point at the image's first
 * pixel (plus the group's channel offset), dy at the output row's; dx is accumulated into (+=),
 * so overlapping windows add up, and must be zeroed by the caller.
 */
function poolGradKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('pool_grad', new Array<A.ValType>(12).fill('i32'));
  const [x, dy, dx, pxBytes, outW, inW, inH, fh, fw, sw, yStart, left] = f.params;
  const [ox, y0, y1, x0, x1, yy, xx, xs, idx, addr] = new Array(10).fill(0).map(() => f.local('i32'));
  const [best, pos, v, gt, g] = new Array(5).fill(0).map(() => f.local('v128'));
  const pixel = (base: A.Local) => add(get(base), mul(add(mul(get(yy), get(inW)), get(xx)), get(pxBytes)));
  const overWindow = (...body: A.Code[]) =>
    A.seq(
      set(idx, i32(0)),
      A.forLoopSigned(yy, get(y0), get(y1), A.forLoopSigned(xx, get(x0), get(x1), ...body, inc(idx, i32(1)))),
    );
  const body = [
    set(y0, maxS(get(yStart), i32(0))),
    set(y1, minS(add(get(yStart), get(fh)), get(inH))),
    forLoop(
      ox,
      i32(0),
      get(outW),
      i32(1),
      set(xs, sub(mul(get(ox), get(sw)), get(left))),
      set(x0, maxS(get(xs), i32(0))),
      set(x1, minS(add(get(xs), get(fw)), get(inW))),
      set(best, negInf),
      set(pos, i32x4Splat(i32(-1))),
      overWindow(
        set(v, v128Load(pixel(x))),
        set(gt, f32x4Gt(get(v), get(best))),
        set(best, bitselect(get(v), get(best), get(gt))),
        set(pos, bitselect(i32x4Splat(get(idx)), get(pos), get(gt))),
      ),
      set(g, v128Load(get(dy))),
      overWindow(
        set(addr, pixel(dx)),
        v128Store(get(addr), f32x4Add(v128Load(get(addr)), v128And(get(g), i32x4Eq(get(pos), i32x4Splat(get(idx)))))),
      ),
      inc(dy, get(pxBytes)),
    ),
  ];
  return { builder: f, body };
}

/**
 * The loop of the row kernels (col_sum, bias_add and row_mul here, scale_shift and
 * scale_shift_grad in scale-shift.ts) over a [rows, 4 groups] float matrix: for each row, the
 * pointers into the one-row vectors set back to their starts (`vectors`: [pointer, start] pairs),
 * then for each of the row's `groups` f32x4 `body`, after which every pointer in `advance` moves
 * 16 bytes on (the matrices' pointers walk on across rows).
 */
export function overRows(
  f: A.FunctionBuilder,
  rows: A.Local,
  groups: A.Local,
  vectors: readonly (readonly [A.Local, A.Local])[],
  body: readonly A.Code[],
  advance: readonly A.Local[],
): A.Code {
  const [r, k] = [f.local('i32'), f.local('i32')];
  return forLoop(
    r,
    i32(0),
    get(rows),
    i32(1),
    ...vectors.map(([p, start]) => set(p, get(start))),
    forLoop(k, i32(0), get(groups), i32(1), ...body, ...advance.map((p) => inc(p, i32(16)))),
  );
}

/** col_sum(src, dst, rows, groups): dst[0 .. 4 groups) += the sum of src's rows, f32x4 at a time. */
function colSumKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('col_sum', ['i32', 'i32', 'i32', 'i32']);
  const [src, dst, rows, groups] = f.params;
  const p = f.local('i32');
  const body = [overRows(f, rows, groups, [[p, dst]], [v128Store(get(p), f32x4Add(v128Load(get(p)), v128Load(get(src))))], [p, src])];
  return { builder: f, body };
}

/**
 * bias_add(src, bias, dst, rows, groups): dst row = src row + bias ([rows, 4 groups] floats); and
 * row_mul, the same with a product: dst row = src row * row (a channel gate on one image).
 */
function rowOpKernel(name: 'bias_add' | 'row_mul'): A.FunctionDef {
  const f = new A.FunctionBuilder(name, ['i32', 'i32', 'i32', 'i32', 'i32']);
  const op = name === 'bias_add' ? f32x4Add : f32x4Mul;
  const [src, bias, dst, rows, groups] = f.params;
  const p = f.local('i32');
  const body = [overRows(f, rows, groups, [[p, bias]], [v128Store(get(dst), op(v128Load(get(src)), v128Load(get(p))))], [p, src, dst])];
  return { builder: f, body };
}

/** Largest number of f32x4 accumulators (dx channels / 4) of an input-gradient kernel call. */
export const IG_VECS = 8;

/**
 * nz_compress(src, entries, starts, rows, ow, o, offStep, pxExtra)
 *
 * Lists the nonzero values of `rows` x `ow` pixels of o channels at src (NHWC, contiguous) as
 * 8-byte entries (f32 value, i32 offset) from `entries` on, pixel after pixel; starts[q] (i32 at
 * starts + 4 q) is the address of pixel q's first entry, starts[rows * ow] the end of the list. The
 * offset of channel oo of pixel ox (counted from the start of its row) is
 * (ox * o + oo) * offStep + ox * pxExtra. Branch-free: every value is written, and the write
 * position advances only past nonzeros (NaN counts as nonzero). The entries area must hold
 * rows * ow * o entries.
 */
function nzCompressKernel(unroll: number): A.FunctionDef {
  const f = new A.FunctionBuilder(`nz_compress_${unroll}`, new Array<A.ValType>(8).fill('i32'));
  const [src, entries, starts, rows, ow, o, offStep, pxExtra] = f.params;
  const [row, ox, oo, p, q, off] = new Array(6).fill(0).map(() => f.local('i32'));
  const v = f.local('f32');
  const perValue: A.Code[] = [];
  for (let u = 0; u < unroll; u++) {
    perValue.push(
      set(v, f32Load(get(src), 4 * u)),
      f32Store(get(p), get(v)),
      i32Store(get(p), get(off), 4),
      inc(p, shl(f32Ne(get(v), f32(0)), i32(3))),
      inc(off, get(offStep)),
    );
  }
  const body = [
    set(p, get(entries)),
    set(q, get(starts)),
    forLoop(
      row,
      i32(0),
      get(rows),
      i32(1),
      set(off, i32(0)),
      forLoop(
        ox,
        i32(0),
        get(ow),
        i32(1),
        i32Store(get(q), get(p)),
        inc(q, i32(4)),
        forLoop(oo, i32(0), get(o), i32(unroll), ...perValue, inc(src, i32(4 * unroll))),
        inc(off, get(pxExtra)),
      ),
    ),
    i32Store(get(q), get(p)),
  ];
  return { builder: f, body };
}

/**
 * ig_V_T(sp, w, out, n, nth, ntwBytes, spRow, wTh, wPx, outPx)
 *
 * `n` dx pixels, each the sum over `nth` filter-tap rows of the entries (nz_compress) of a run of
 * dy pixels: for tap row t, the entries from i32[sp + t spRow] to i32[sp + t spRow + ntwBytes];
 * each entry (value, offset) adds value * W[w + t wTh + offset .. + 16 V) to V f32x4 accumulators,
 * which are then stored at out (T > 0: only T lanes of the last). After each pixel, sp += 4,
 * w += wPx, out += outPx.
 */
function inputGradKernel(vecs: number, tail: number): A.FunctionDef {
  const f = new A.FunctionBuilder(`ig_${vecs}_${tail}`, new Array<A.ValType>(10).fill('i32'));
  const [sp0, w0, out, n, nth, ntwBytes, spRow, wTh, wPx, outPx] = f.params;
  const [i, th, sp, wr, e, end, wa] = new Array(7).fill(0).map(() => f.local('i32'));
  const s = f.local('v128');
  const acc = Array.from({ length: vecs }, () => f.local('v128'));
  const zero = f32x4Splat(f32(0));
  const perEntry: A.Code[] = [set(s, load32Splat(get(e))), set(wa, add(get(wr), i32Load(get(e), 4)))];
  for (let v = 0; v < vecs; v++) {
    perEntry.push(set(acc[v], f32x4Add(get(acc[v]), f32x4Mul(get(s), v128Load(get(wa), 16 * v)))));
  }
  perEntry.push(inc(e, i32(8)));
  const stores: A.Code[] = [];
  for (let v = 0; v < vecs; v++) {
    if (v < vecs - 1 || tail === 0) stores.push(v128Store(get(out), get(acc[v]), 16 * v));
    else for (let l = 0; l < tail; l++) stores.push(f32Store(get(out), f32x4ExtractLane(get(acc[v]), l), 16 * v + 4 * l));
  }
  const body = [
    forLoop(
      i,
      i32(0),
      get(n),
      i32(1),
      ...acc.map((a) => set(a, zero)),
      set(sp, get(sp0)),
      set(wr, get(w0)),
      forLoop(
        th,
        i32(0),
        get(nth),
        i32(1),
        set(e, i32Load(get(sp))),
        set(end, i32Load(add(get(sp), get(ntwBytes)))),
        block(brIf(0, geU(get(e), get(end))), loop(...perEntry, brIf(0, ltU(get(e), get(end))))),
        inc(sp, get(spRow)),
        inc(wr, get(wTh)),
      ),
      ...stores,
      inc(sp0, i32(4)),
      inc(w0, get(wPx)),
      inc(out, get(outPx)),
    ),
  ];
  return { builder: f, body };
}

/** Largest number of f32x4 accumulators (R rows x V vectors) of a sparse filter-gradient kernel. */
export const FGS_ACCS = 12;

/**
 * copy_check(src, dst, rows, vecs, tail, srcLine, dstLine, flag)
 *
 * Copies `rows` lines of 4 vecs + tail floats (tail < 4) from src (line stride srcLine bytes) to
 * dst (stride dstLine), and ORs into the four i32 at `flag` a nonzero value if any copied float is
 * Infinity or NaN (exponent bits all ones).
 */
function copyCheckKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('copy_check', new Array<A.ValType>(8).fill('i32'));
  const [src, dst, rows, vecs, tail, srcLine, dstLine, flag] = f.params;
  const [row, i, s, d, w, badS] = new Array(6).fill(0).map(() => f.local('i32'));
  const [v, bad] = [f.local('v128'), f.local('v128')];
  const expMask = 0x7f800000;
  const body = [
    set(bad, i32x4Splat(i32(0))),
    set(badS, i32(0)),
    forLoop(
      row,
      i32(0),
      get(rows),
      i32(1),
      set(s, add(get(src), mul(get(row), get(srcLine)))),
      set(d, add(get(dst), mul(get(row), get(dstLine)))),
      forLoop(
        i,
        i32(0),
        get(vecs),
        i32(1),
        set(v, v128Load(get(s))),
        v128Store(get(d), get(v)),
        set(bad, v128Or(get(bad), i32x4Eq(v128And(get(v), i32x4Splat(i32(expMask))), i32x4Splat(i32(expMask))))),
        inc(s, i32(16)),
        inc(d, i32(16)),
      ),
      forLoop(
        i,
        i32(0),
        get(tail),
        i32(1),
        set(w, i32Load(get(s))),
        i32Store(get(d), get(w)),
        set(badS, or(get(badS), eq(and(get(w), i32(expMask)), i32(expMask)))),
        inc(s, i32(4)),
        inc(d, i32(4)),
      ),
    ),
    v128Store(get(flag), v128Or(v128Load(get(flag)), get(bad))),
    i32Store(get(flag), or(i32Load(get(flag)), get(badS))),
  ];
  return { builder: f, body };
}

/**
 * nz_channels(src, pos, rows, ow, o, offPx, offRowExtra, off0)
 *
 * Lists the nonzero values of `rows` x `ow` pixels of o channels at src (NHWC, contiguous) per
 * channel: channel oo's entries (f32 value, i32 offset; 8 bytes) are appended at the address
 * i32[pos + 4 oo], which is advanced past them. The offset of the first pixel is off0; it advances
 * by offPx per pixel and by offRowExtra more after each row. Branch-free: every value is written,
 * and the write position advances only past nonzeros (NaN counts as nonzero), so each channel's
 * area must have room for one entry per pixel.
 */
function nzChannelsKernel(): A.FunctionDef {
  const f = new A.FunctionBuilder('nz_channels', new Array<A.ValType>(8).fill('i32'));
  const [src, pos, rows, ow, o, offPx, offRowExtra, off0] = f.params;
  const [oo, row, px, p, s, off, pxBytes] = new Array(7).fill(0).map(() => f.local('i32'));
  const v = f.local('f32');
  const body = [
    set(pxBytes, shl(get(o), i32(2))),
    forLoop(
      oo,
      i32(0),
      get(o),
      i32(1),
      set(p, i32Load(add(get(pos), shl(get(oo), i32(2))))),
      set(s, add(get(src), shl(get(oo), i32(2)))),
      set(off, get(off0)),
      forLoop(
        row,
        i32(0),
        get(rows),
        i32(1),
        set(px, get(ow)),
        loop(
          set(v, f32Load(get(s))),
          f32Store(get(p), get(v)),
          i32Store(get(p), get(off), 4),
          inc(p, shl(f32Ne(get(v), f32(0)), i32(3))),
          inc(s, get(pxBytes)),
          inc(off, get(offPx)),
          set(px, sub(get(px), i32(1))),
          brIf(0, ne(get(px), i32(0))),
        ),
        inc(off, get(offRowExtra)),
      ),
      i32Store(add(get(pos), shl(get(oo), i32(2))), get(p)),
    ),
  ];
  return { builder: f, body };
}

/** Largest number of 4-channel groups that nz_channels_4_G lists in one pass. */
export const NZ_GROUPS = 4;

/**
 * nz_channels_4_G(src, pos, rows, ow, pxBytes, offPx, offRowExtra, off0): nz_channels for G groups
 * of 4 channels (4 G consecutive channels from src; pxBytes the pixel stride, 4 o), reading each
 * pixel's 4 G values as G f32x4 and keeping the 4 G write positions (i32 at pos) in G i32x4: an
 * entry (value, offset) is one 64-bit lane store, and the positions advance by 8 where the compare
 * with 0 is true.
 */
function nzChannels4Kernel(groups: number): A.FunctionDef {
  const f = new A.FunctionBuilder(`nz_channels_4_${groups}`, new Array<A.ValType>(8).fill('i32'));
  const [src, pos, rows, ow, pxBytes, offPx, offRowExtra, off0] = f.params;
  const [row, px, s] = new Array(3).fill(0).map(() => f.local('i32'));
  const p = Array.from({ length: groups }, () => f.local('v128'));
  const [v, m, off, w01, w23, offPxV] = new Array(6).fill(0).map(() => f.local('v128'));
  // the entries (value, offset) of lanes 0, 1 (2, 3) as the two 64-bit lanes of a v128: the 32-bit
  // interleave of v's low (high) half with off's (all lanes equal), one unpack instruction
  const interleave = (lanes: number[]) => lanes.flatMap((l) => [0, 1, 2, 3].map((i) => 4 * l + i));
  const low = interleave([0, 4, 1, 5]);
  const high = interleave([2, 6, 3, 7]);
  const perPixel: A.Code[] = [];
  for (let gi = 0; gi < groups; gi++) {
    perPixel.push(
      set(v, v128Load(get(s), 16 * gi)),
      set(m, v128And(f32x4Ne(get(v), f32x4Splat(f32(0))), i32x4Splat(i32(8)))),
      set(w01, i8x16Shuffle(get(v), get(off), low)),
      set(w23, i8x16Shuffle(get(v), get(off), high)),
    );
    for (let l = 0; l < 4; l++) perPixel.push(v128Store64Lane(i32x4ExtractLane(get(p[gi]), l), get(l < 2 ? w01 : w23), l % 2));
    perPixel.push(set(p[gi], i32x4Add(get(p[gi]), get(m))));
  }
  perPixel.push(
    inc(s, get(pxBytes)),
    set(off, i32x4Add(get(off), get(offPxV))),
    set(px, sub(get(px), i32(1))),
    brIf(0, ne(get(px), i32(0))),
  );
  const body = [
    set(offPxV, i32x4Splat(get(offPx))),
    ...p.map((pg, gi) => set(pg, v128Load(get(pos), 16 * gi))),
    set(s, get(src)),
    set(off, i32x4Splat(get(off0))),
    forLoop(
      row,
      i32(0),
      get(rows),
      i32(1),
      set(px, get(ow)),
      loop(...perPixel),
      set(off, i32x4Add(get(off), i32x4Splat(get(offRowExtra)))),
    ),
    ...p.map((pg, gi) => v128Store(get(pos), get(pg), 16 * gi)),
  ];
  return { builder: f, body };
}

/**
 * fgs_R_V(starts, ends, o, x, out, xRow, outRow, outStride)
 *
 * The filter gradient from per-channel lists of dy's nonzeros (nz_channels): for each of o
 * channels oo, the entries (value, offset) from i32[starts + 4 oo] to i32[ends + 4 oo] add
 * value * x[x + offset + r xRow + 16 v] to R x V f32x4 accumulators, which are loaded from and
 * stored back to out + oo outStride + r outRow + 16 v.
 */
function sparseFilterGradKernel(rows: number, vecs: number): A.FunctionDef {
  const f = new A.FunctionBuilder(`fgs_${rows}_${vecs}`, new Array<A.ValType>(8).fill('i32'));
  const [starts, ends, o, x, out, xRow, outRow, outStride] = f.params;
  const [oo, e, end, a, dst] = new Array(5).fill(0).map(() => f.local('i32'));
  const s = f.local('v128');
  const acc = Array.from({ length: rows }, () => Array.from({ length: vecs }, () => f.local('v128')));
  const loads: A.Code[] = [];
  const stores: A.Code[] = [];
  for (let r = 0; r < rows; r++) {
    const at = r === 0 ? get(dst) : add(get(dst), mul(get(outRow), i32(r)));
    for (let v = 0; v < vecs; v++) {
      loads.push(set(acc[r][v], v128Load(at, 16 * v)));
      stores.push(v128Store(at, get(acc[r][v]), 16 * v));
    }
  }
  const perEntry: A.Code[] = [set(s, load32Splat(get(e))), set(a, add(get(x), i32Load(get(e), 4)))];
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vecs; v++) {
      perEntry.push(set(acc[r][v], f32x4Add(get(acc[r][v]), f32x4Mul(get(s), v128Load(get(a), 16 * v)))));
    }
    if (r < rows - 1) perEntry.push(inc(a, get(xRow)));
  }
  perEntry.push(inc(e, i32(8)));
  const body = [
    forLoop(
      oo,
      i32(0),
      get(o),
      i32(1),
      set(e, i32Load(add(get(starts), shl(get(oo), i32(2))))),
      set(end, i32Load(add(get(ends), shl(get(oo), i32(2))))),
      set(dst, add(get(out), mul(get(oo), get(outStride)))),
      ...loads,
      block(brIf(0, geU(get(e), get(end))), loop(...perEntry, brIf(0, ltU(get(e), get(end))))),
      ...stores,
    ),
  ];
  return { builder: f, body };
}

export interface SimdKernels {
  /** Filter-gradient micro-kernels: fg[R - 1][i] for R rows and FG_COLS[i] columns. */
  readonly fg: readonly (readonly WasmFn[])[];
  readonly padTranspose: WasmFn;
  /** nz_compress for any channel count, and for multiples of 4 (unrolled). */
  readonly nzCompress: WasmFn;
  readonly nzCompress4: WasmFn;
  /** Input-gradient kernels: ig[V - 1][T] for V accumulators, T lanes of the last stored (0: all). */
  readonly ig: readonly (readonly WasmFn[])[];
  /** Sparse filter-gradient kernels: fgs[R - 1][V - 1] for R rows of V f32x4 (R V <= FGS_ACCS). */
  readonly fgs: readonly (readonly (WasmFn | undefined)[])[];
  /** nz_channels for any channel count, and nzChannels4[G - 1] for G groups of 4 channels. */
  readonly nzChannels: WasmFn;
  readonly nzChannels4: readonly WasmFn[];
  readonly copyCheck: WasmFn;
  readonly poolGrad2x2: WasmFn;
  readonly poolGrad: WasmFn;
  readonly colSum: WasmFn;
  readonly biasAdd: WasmFn;
  readonly rowMul: WasmFn;
}

let enabled = true;

/** Turns the SIMD kernels off (callers then take their fallbacks) or back on; for tests and benchmarks. */
export function setSimdKernelsEnabled(on: boolean): void {
  enabled = on;
}

/** The kernels on `backend`'s heap, or null when they are unavailable (or turned off). */
export const simdKernels: (backend: WasmBackend) => SimdKernels | null = wasmModule<SimdKernels>(
  {
    name: 'HistoFed SIMD kernels',
    functions: () => {
      const defs: A.FunctionDef[] = [];
      for (let r = 1; r <= FG_ROWS; r++) for (const k of FG_COLS) defs.push(filterGradKernel(r, k));
      defs.push(nzCompressKernel(1), nzCompressKernel(4));
      for (let v = 1; v <= IG_VECS; v++) for (let t = 0; t < 4; t++) defs.push(inputGradKernel(v, t));
      for (let r = 1; r <= FGS_ACCS; r++) {
        for (let v = 1; r * v <= FGS_ACCS; v++) defs.push(sparseFilterGradKernel(r, v));
      }
      defs.push(nzChannelsKernel(), copyCheckKernel());
      for (let g = 1; g <= NZ_GROUPS; g++) defs.push(nzChannels4Kernel(g));
      defs.push(padTransposeKernel(), poolGrad2x2Kernel(), poolGradKernel(), colSumKernel());
      defs.push(rowOpKernel('bias_add'), rowOpKernel('row_mul'));
      return defs;
    },
    bind: (fn) => {
      const fg: WasmFn[][] = [];
      for (let r = 1; r <= FG_ROWS; r++) fg.push(FG_COLS.map((k) => fn(`fg_${r}_${k}`)));
      const ig: WasmFn[][] = [];
      for (let v = 1; v <= IG_VECS; v++) ig.push([0, 1, 2, 3].map((t) => fn(`ig_${v}_${t}`)));
      const fgs: (WasmFn | undefined)[][] = [];
      for (let r = 1; r <= FGS_ACCS; r++) {
        fgs.push(Array.from({ length: FGS_ACCS }, (_x, i) => (r * (i + 1) <= FGS_ACCS ? fn(`fgs_${r}_${i + 1}`) : undefined)));
      }
      return {
        fg,
        fgs,
        nzChannels: fn('nz_channels'),
        nzChannels4: Array.from({ length: NZ_GROUPS }, (_x, g) => fn(`nz_channels_4_${g + 1}`)),
        copyCheck: fn('copy_check'),
        padTranspose: fn('pad_transpose'),
        nzCompress: fn('nz_compress_1'),
        nzCompress4: fn('nz_compress_4'),
        ig,
        poolGrad2x2: fn('pool_grad_2x2'),
        poolGrad: fn('pool_grad'),
        colSum: fn('col_sum'),
        biasAdd: fn('bias_add'),
        rowMul: fn('row_mul'),
      };
    },
  },
  () => enabled,
);

/**
 * The accessor of another module of HistoFed's SIMD kernels (those of clip-gradient.ts,
 * relu-gradient.ts, scale-shift.ts, pointwise-conv.ts, depthwise-conv2d-backprop.ts), instantiated
 * on the wasm backend's memory as these are (wasm-module.ts) and null wherever these are:
 * simdKernels decides, so that setWasmFastPathsEnabled(false) turns them off too.
 */
export function simdModule<K>(spec: WasmModuleSpec<K>): (backend: WasmBackend) => K | null {
  return wasmModule(spec, (backend) => simdKernels(backend) !== null);
}
