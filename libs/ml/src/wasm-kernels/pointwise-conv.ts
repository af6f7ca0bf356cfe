/**
 * 1x1 convolutions (stride 1, no padding: MobileNetV2's expand and project layers) on the wasm
 * backend as matrix products on a WebAssembly SIMD kernel of HistoFed's own. With x [N, c]
 * (N = b * h * w pixels, NHWC), W [c, o] and dy [N, o]:
 *
 *   forward         y  = x  W        [N, c] x [c, o]     (FusedConv2D without bias or activation)
 *   input gradient  dx = dy W^T      [N, o] x [o, c]     (Conv2DBackpropInput)
 *   filter gradient dW = x^T dy      [c, N] x [N, o]     (Conv2DBackpropFilter)
 *
 * One micro-kernel does all three, C = A B with A and B read through strides (no copies of the
 * activations): `pw_R_V_T` holds an R x 4V tile of C in R V f32x4 registers (R <= 4 rows, V <= 2
 * vectors, the last vector's first T lanes only when T > 0) and walks k: per k, V f32x4 loads of
 * B's row k and R load-splats of A's column k, R V multiply-adds. `pwa_R_V` adds the tile to C
 * instead of storing it. A is x (rows of c floats), dy (rows of o floats) or x^T (the filter
 * gradient: A's rows are x's channels, 4 bytes apart, its k stride a pixel of x); B is W, a packed
 * W^T (o rows of c rounded up to 4 floats, zeros after c) or dy. The 4 x 8 tile measured fastest
 * (larger tiles and k unrolled were slower: V8 spills, or the loop body grows); it runs at what two
 * f32x4 multiplies and two adds per cycle allow, faster than XNNPACK on MobileNetV2's 1x1 layers
 * (figures: bench/train/KERNELS.md).
 *
 * Sums: over k in order, in float32 (the cpu backend rounds once per term, its float32 products
 * being exact in float64: results agree to ~1e-7 relative). The filter gradient sums N products:
 * pixels go in chunks of CHUNK_PIXELS (whose x and dy rows stay in the L1 cache while every tile of
 * dW walks them) added into a float32 block of up to BLOCK_PIXELS pixels, and the blocks' sums are
 * added in float64 (the cpu backend sums in float64).
 * Dense products: NaN and Infinity propagate as in a dense convolution (no zeros are skipped).
 *
 * Applies to float32 NHWC tensors, 1x1 filters, stride 1 and zero padding (a 1x1 filter's 'same'
 * and 'valid'), dilation 1; the filter gradient also needs o a multiple of 4 (dy is read in place,
 * f32x4 at a time, and must not be read past its rows). Off with HistoFed's SIMD kernels
 * (setWasmFastPathsEnabled(false)): the callers then take their former paths.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TensorInfo } from '@tensorflow/tfjs-core';
import * as A from './wasm-asm';
import { simdModule } from './simd-kernels';
import type { WasmBackend } from './wasm-heap';
import { floatOffset, heapF32 } from './wasm-heap';
import type { WasmFn } from './wasm-module';

const { get, set, i32, f32, add, mul, inc, forLoop, v128Load, v128Store, load32Splat } = A;
const { f32x4Add, f32x4Mul, f32x4Splat, f32x4ExtractLane, f32Store } = A;

/** Rows and f32x4 columns of the largest register tile. */
const ROWS = 4;
const VECS = 2;
/**
 * Largest fraction of nonzeros in dy for which the gradients of a 1x1 convolution take the kernels
 * on dy's nonzeros (conv2d-backprop-input.ts, conv2d-backprop-filter.ts) rather than these dense
 * products (measured break-even ~0.35 with 384 dy channels and 64 x channels, MobileNetV2's
 * expand layers after ReLU6; the project layers' dy is dense anyway; bench/train/KERNELS.md).
 */
export const POINTWISE_SPARSE_DENSITY = 1 / 3;
/** Pixels per filter-gradient call (their x and dy rows stay in L1 while every tile walks them). */
const CHUNK_PIXELS = 128;
/** Pixels summed in float32 before the filter gradient's float64 sum. */
const BLOCK_PIXELS = 2048;

/**
 * pw_R_V_T(a, aRow, aK, b, bK, c, cRow, k, groups, blocks) (`pwa_R_V` likewise, T = 0)
 *
 * For each of `groups` groups of R rows (the group's first row of A at a + g R aRow, of C at
 * c + g R cRow) and each of `blocks` blocks of 4 V columns (B and C columns from 16 V block bytes):
 * C tile = (pwa: C tile +) the sum over kk < k of A[r, kk] B[kk, 0 .. 4 V), with A[r, kk] at
 * a + r aRow + kk aK and B's row kk at b + kk bK. T > 0: only the first T lanes of the last vector
 * are stored (blocks should then be 1).
 */
function gemmKernel(rows: number, vecs: number, tail: number, accumulate: boolean): A.FunctionDef {
  const name = accumulate ? `pwa_${rows}_${vecs}` : `pw_${rows}_${vecs}_${tail}`;
  const f = new A.FunctionBuilder(name, new Array<A.ValType>(10).fill('i32'));
  const [a, aRow, aK, b, bK, c, cRow, k, groups, blocks] = f.params;
  const acc = Array.from({ length: rows }, () => Array.from({ length: vecs }, () => f.local('v128')));
  const bv = Array.from({ length: vecs }, () => f.local('v128'));
  const s = f.local('v128');
  const ap = Array.from({ length: rows }, () => f.local('i32'));
  const cr = Array.from({ length: rows }, () => f.local('i32'));
  const [g, blk, kk, bq, aG, cG] = new Array(6).fill(0).map(() => f.local('i32'));

  const perK: A.Code[] = [];
  for (let v = 0; v < vecs; v++) perK.push(set(bv[v], v128Load(get(bq), 16 * v)));
  for (let r = 0; r < rows; r++) {
    perK.push(set(s, load32Splat(get(ap[r]))));
    for (let v = 0; v < vecs; v++) perK.push(set(acc[r][v], f32x4Add(get(acc[r][v]), f32x4Mul(get(s), get(bv[v])))));
  }
  for (let r = 0; r < rows; r++) perK.push(inc(ap[r], get(aK)));
  perK.push(inc(bq, get(bK)));

  const perBlock: A.Code[] = [set(bq, add(get(b), mul(get(blk), i32(16 * vecs))))];
  for (let r = 0; r < rows; r++) {
    perBlock.push(set(cr[r], add(add(get(cG), mul(get(cRow), i32(r))), mul(get(blk), i32(16 * vecs)))));
    perBlock.push(set(ap[r], add(get(aG), mul(get(aRow), i32(r)))));
    for (let v = 0; v < vecs; v++) {
      perBlock.push(set(acc[r][v], accumulate ? v128Load(get(cr[r]), 16 * v) : f32x4Splat(f32(0))));
    }
  }
  perBlock.push(forLoop(kk, i32(0), get(k), i32(1), ...perK));
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vecs; v++) {
      if (v < vecs - 1 || tail === 0) {
        perBlock.push(v128Store(get(cr[r]), get(acc[r][v]), 16 * v));
      } else {
        for (let l = 0; l < tail; l++) perBlock.push(f32Store(get(cr[r]), f32x4ExtractLane(get(acc[r][v]), l), 16 * v + 4 * l));
      }
    }
  }
  const body = [
    forLoop(
      g,
      i32(0),
      get(groups),
      i32(1),
      set(aG, add(get(a), mul(get(g), mul(get(aRow), i32(rows))))),
      set(cG, add(get(c), mul(get(g), mul(get(cRow), i32(rows))))),
      forLoop(blk, i32(0), get(blocks), i32(1), ...perBlock),
    ),
  ];
  return { builder: f, body };
}

interface PointwiseKernels {
  /** pw[R - 1][V - 1][T]: store, T lanes of the last vector (0: all). */
  readonly pw: readonly (readonly (readonly WasmFn[])[])[];
  /** pwa[R - 1][V - 1]: accumulate into C. */
  readonly pwa: readonly (readonly WasmFn[])[];
}

/**
 * The kernels on `backend`'s memory, or null where HistoFed's SIMD kernels are unavailable or
 * turned off (simd-kernels.ts decides, so setWasmFastPathsEnabled applies here too).
 */
const pointwiseKernelsOn = simdModule<PointwiseKernels>({
  name: 'HistoFed pointwise kernels',
  functions: () => {
    const defs: A.FunctionDef[] = [];
    for (let r = 1; r <= ROWS; r++) {
      for (let v = 1; v <= VECS; v++) {
        for (let t = 0; t < 4; t++) defs.push(gemmKernel(r, v, t, false));
        defs.push(gemmKernel(r, v, 0, true));
      }
    }
    return defs;
  },
  bind: (fn) => {
    const pw: WasmFn[][][] = [];
    const pwa: WasmFn[][] = [];
    for (let r = 1; r <= ROWS; r++) {
      pw.push([]);
      pwa.push([]);
      for (let v = 1; v <= VECS; v++) {
        pw[r - 1].push([0, 1, 2, 3].map((t) => fn(`pw_${r}_${v}_${t}`)));
        pwa[r - 1].push(fn(`pwa_${r}_${v}`));
      }
    }
    return { pw, pwa };
  },
});

/** Geometry of a product C [m, n] = A [m, k] B [k, n] (byte addresses and strides). */
interface Product {
  a: number;
  aRow: number;
  aK: number;
  b: number;
  bK: number;
  c: number;
  cRow: number;
  m: number;
  n: number;
  k: number;
}

/**
 * C = A B (accumulate: C += A B; then n must be a multiple of 4): full tiles of ROWS x 4 VECS,
 * then the last columns (a narrower block, T lanes of its last vector), then the last rows. B's
 * rows are read f32x4 at a time up to n rounded up to 4 floats: they must be readable there.
 */
function product(kernels: PointwiseKernels, p: Product, accumulate: boolean): void {
  const { a, aRow, aK, b, bK, c, cRow, m, n, k } = p;
  const width = 4 * VECS;
  const fullBlocks = Math.floor(n / width);
  const rest = n - fullBlocks * width; // 0 .. width - 1 columns
  const restVecs = Math.ceil(rest / 4);
  const restTail = rest % 4;
  const call = (rows: number, row0: number, groups: number) => {
    const aa = a + row0 * aRow;
    const cc = c + row0 * cRow;
    if (fullBlocks > 0) {
      const fn = accumulate ? kernels.pwa[rows - 1][VECS - 1] : kernels.pw[rows - 1][VECS - 1][0];
      fn(aa, aRow, aK, b, bK, cc, cRow, k, groups, fullBlocks);
    }
    if (rest > 0) {
      const fn = accumulate ? kernels.pwa[rows - 1][restVecs - 1] : kernels.pw[rows - 1][restVecs - 1][restTail];
      const off = 4 * fullBlocks * width;
      fn(aa, aRow, aK, b + off, bK, cc + off, cRow, k, groups, 1);
    }
  };
  const groups = Math.floor(m / ROWS);
  if (groups > 0) call(ROWS, 0, groups);
  const lastRows = m - groups * ROWS;
  if (lastRows > 0) call(lastRows, groups * ROWS, 1);
}

/** Whether a convolution with this geometry is a 1x1 one these kernels compute (see the module comment). */
export function isPointwise(info: tf.backend_util.Conv2DInfo): boolean {
  const { top, bottom, left, right } = info.padInfo;
  return (
    info.filterHeight === 1 &&
    info.filterWidth === 1 &&
    info.strideHeight === 1 &&
    info.strideWidth === 1 &&
    info.dilationHeight === 1 &&
    info.dilationWidth === 1 &&
    top === 0 &&
    bottom === 0 &&
    left === 0 &&
    right === 0 &&
    info.dataFormat === 'channelsLast' &&
    info.outHeight === info.inHeight &&
    info.outWidth === info.inWidth
  );
}

function float32(...ts: TensorInfo[]): boolean {
  return ts.every((t) => t.dtype === 'float32');
}

/**
 * y = conv2d(x, W) for a 1x1 filter W [1, 1, c, o] (stride 1, no padding), or null when these
 * kernels do not apply or are unavailable.
 */
export function pointwiseConv2D(
  backend: WasmBackend,
  x: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo | null {
  if (!isPointwise(info) || !float32(x, filter)) return null;
  const { inChannels: c, outChannels: o } = info;
  // B = W [c, o]; its rows are read up to o rounded up to 4: in place when o is a multiple of 4,
  // else from a padded copy.
  const pad = (heap: Float32Array, pw: number, o4: number) => {
    const w = floatOffset(backend, filter);
    heap.fill(0, pw, pw + c * o4);
    for (let ci = 0; ci < c; ci++) heap.copyWithin(pw + ci * o4, w + ci * o, w + (ci + 1) * o);
  };
  return pixelProduct(backend, info, x, [...info.outShape], c, o, o % 4 === 0 ? filter : pad);
}

/**
 * dx = dy W^T (Conv2DBackpropInput of a 1x1 filter, stride 1, no padding), or null when these
 * kernels do not apply or are unavailable.
 */
export function pointwiseBackpropInput(
  backend: WasmBackend,
  dy: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo | null {
  if (!isPointwise(info) || !float32(dy, filter)) return null;
  const { inChannels: c, outChannels: o } = info;
  // B = W^T [o, c], packed with rows of c rounded up to 4 (zeros after c).
  const pack = (heap: Float32Array, p: number, c4: number) => {
    const w = floatOffset(backend, filter);
    for (let oo = 0; oo < o; oo++) {
      const row = p + oo * c4;
      for (let ci = 0; ci < c; ci++) heap[row + ci] = heap[w + ci * o + oo];
      for (let ci = c; ci < c4; ci++) heap[row + ci] = 0;
    }
  };
  return pixelProduct(backend, info, dy, [info.batchSize, info.inHeight, info.inWidth, c], o, c, pack);
}

/**
 * The forward and the input gradient of a 1x1 convolution, both a product over the pixels:
 * out [n, width] (shape outShape) = A [n, depth] B [depth, width], with A = x, B = W [c, o] (the
 * forward) or A = dy, B = W^T [o, c] (the input gradient); null when the kernels are unavailable.
 * An empty product leaves out as allocated, depth 0 fills it with zeros. B's rows are read up to
 * width rounded up to 4 floats: `b` is B itself (read in place), or a function that writes B, rows
 * of width4 floats with zeros after width, into a temporary at the given float index of the heap.
 */
function pixelProduct(
  backend: WasmBackend,
  info: tf.backend_util.Conv2DInfo,
  a: TensorInfo,
  outShape: number[],
  depth: number,
  width: number,
  b: TensorInfo | ((heap: Float32Array, at: number, width4: number) => void),
): TensorInfo | null {
  const kernels = pointwiseKernelsOn(backend);
  if (kernels === null) return null;
  const n = info.batchSize * info.inHeight * info.inWidth;
  const out = backend.makeOutput(outShape, 'float32');
  if (n === 0 || width === 0) return out;
  if (depth === 0) {
    heapF32(backend).fill(0, floatOffset(backend, out), floatOffset(backend, out) + n * width);
    return out;
  }
  const width4 = Math.ceil(width / 4) * 4;
  const packed = typeof b === 'function' ? backend.makeOutput([depth * width4], 'float32') : null;
  try {
    if (typeof b === 'function' && packed !== null) b(heapF32(backend), floatOffset(backend, packed), width4); // after the allocations
    product(
      kernels,
      {
        a: 4 * floatOffset(backend, a),
        aRow: 4 * depth,
        aK: 4,
        b: 4 * floatOffset(backend, packed ?? (b as TensorInfo)),
        bK: 4 * width4,
        c: 4 * floatOffset(backend, out),
        cRow: 4 * width,
        m: n,
        n: width,
        k: depth,
      },
      false,
    );
    return out;
  } finally {
    if (packed !== null) backend.disposeData(packed.dataId);
  }
}

/**
 * dW = x^T dy (Conv2DBackpropFilter of a 1x1 filter, stride 1, no padding; o a multiple of 4), or
 * null when these kernels do not apply or are unavailable.
 */
export function pointwiseBackpropFilter(
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo | null {
  if (!isPointwise(info) || !float32(x, dy) || info.outChannels % 4 !== 0) return null;
  const kernels = pointwiseKernelsOn(backend);
  if (kernels === null) return null;
  const { inChannels: c, outChannels: o } = info;
  const n = info.batchSize * info.inHeight * info.inWidth;
  const out = backend.makeOutput([1, 1, c, o], 'float32');
  const size = c * o;
  if (size === 0) return out;
  const blocks = Math.ceil(n / BLOCK_PIXELS);
  // One block: its float32 sums are the result. Several: each block's sums, added in float64.
  const block = blocks > 1 ? backend.makeOutput([size], 'float32') : out;
  try {
    const outF = floatOffset(backend, out);
    const blockF = floatOffset(backend, block);
    const xB = 4 * floatOffset(backend, x);
    const dyB = 4 * floatOffset(backend, dy);
    if (n === 0) {
      heapF32(backend).fill(0, outF, outF + size);
      return out;
    }
    const total = blocks > 1 ? new Float64Array(size) : null;
    for (let p0 = 0; p0 < n; p0 += BLOCK_PIXELS) {
      const end = Math.min(n, p0 + BLOCK_PIXELS);
      for (let q = p0; q < end; q += CHUNK_PIXELS) {
        product(
          kernels,
          { a: xB + 4 * q * c, aRow: 4, aK: 4 * c, b: dyB + 4 * q * o, bK: 4 * o, c: 4 * blockF, cRow: 4 * o, m: c, n: o, k: Math.min(CHUNK_PIXELS, end - q) },
          q > p0,
        );
      }
      if (total !== null) {
        const heap = heapF32(backend);
        for (let i = 0; i < size; i++) total[i] += heap[blockF + i];
      }
    }
    if (total !== null) heapF32(backend).set(total, outF);
    return out;
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  } finally {
    if (block !== out) backend.disposeData(block.dataId);
  }
}
