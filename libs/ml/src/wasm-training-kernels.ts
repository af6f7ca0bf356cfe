/**
 * Training kernels for `@tensorflow/tfjs-backend-wasm` 4.22, built from kernels it does have.
 *
 * A training step of the HistoFed CNNs needs, besides forward ops, the gradient kernels
 * `Conv2DBackpropFilter`, `Conv2DBackpropInput`, `MaxPoolGrad`, `AvgPoolGrad` and the batch-norm,
 * relu (`Step`), softmax, reduction and Adam kernels. Of these the wasm backend only lacks
 * `Conv2DBackpropFilter` (its other gaps — `DepthwiseConv2dNativeBackprop*`, `UnsortedSegmentSum`,
 * FFT, complex numbers — are not used by our models; see `WASM_MISSING_TRAINING_KERNELS`).
 * Its `Conv2DBackpropInput` (8-15x the forward convolution's time) and `MaxPoolGrad` (3x the
 * JavaScript loop below) are slow direct loops, so they are replaced too (`WASM_TRAINING_KERNELS`);
 * together this trains ~3x faster than with the filter gradient alone (measured on 2 cores:
 * small-cnn, batch 32, ~400 images/s at 32 px and ~130 at 64 px, against ~130 and ~35).
 *
 * The convolution gradients run on wasm's fast XNNPACK `Conv2D`.
 *
 * Filter gradient: a correlation of the input with the output gradient, a convolution once batch
 * and channels swap roles:
 *
 *   x  [b, H, W, c]  --transpose [3,1,2,0]-->  [c, H, W, b]     (batch of c images with b channels)
 *   dy [b, oh, ow, o] --transpose [1,2,0,3]--> [oh, ow, b, o]    (an oh x ow filter, b -> o channels)
 *   conv2d(stride 1, dilation = forward stride, explicit padding = forward padding)
 *        -> [c, >=fh, >=fw, o]  --slice-->  [c, fh, fw, o]  --transpose [1,2,0,3]-->  [fh, fw, c, o]
 *
 * Input gradient (transposed convolution): dy dilated by the stride (zeros between rows and
 * columns, via reshape to [b, oh, 1, ow, 1, o] + pad + reshape), padded by (f - 1 - pad), convolved
 * with the filter rotated 180 degrees and its in/out channels swapped ([fh, fw, o, c]). Explicit
 * paddings larger than the filter fall back to wasm's own kernel.
 *
 * Max-pool gradient: a JavaScript loop over the wasm heap that sends each output gradient to the
 * first maximum of its window (the cpu backend's rule, which matters for ties such as relu zeros).
 *
 * The kernels call the wasm backend's own kernels on TensorInfos (no tf ops, no engine
 * bookkeeping) and free every intermediate with `backend.disposeData`, so they leak nothing.
 * Only NHWC, dilation 1 and float32 are supported; anything else throws a clear error.
 * `wasm-training-kernels.spec.ts` checks every kernel against the `cpu` backend on a grid of
 * strides, padding modes, odd and even sizes, batch sizes and channel counts.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, TensorInfo } from '@tensorflow/tfjs-core';
import { isLeadingAxesSum, leadingAxesSumSimd } from './wasm-kernels/bias-sum';
import { conv2DBackpropFilterSimd } from './wasm-kernels/conv2d-backprop-filter';
import { maxPoolGradSimd, maxPoolGradSimdApplies } from './wasm-kernels/max-pool-grad';
import { simdKernels } from './wasm-kernels/simd-kernels';
import { type KernelArgs, type WasmBackend, runWasmKernel, withTemps } from './wasm-kernels/wasm-heap';

export { setSimdKernelsEnabled } from './wasm-kernels/simd-kernels';

/** Kernels the cpu backend has and wasm does not, that some model might need for training. */
export const WASM_MISSING_TRAINING_KERNELS: readonly string[] = [
  'Conv2DBackpropFilter', // provided by this module
  'DepthwiseConv2dNativeBackpropFilter', // not provided: no depthwise convolutions in our models
  'DepthwiseConv2dNativeBackpropInput', // not provided
  'UnsortedSegmentSum', // gradient of gather; not provided (no embeddings in our models)
];

/** The kernels this module registers for 'wasm'. */
export const WASM_TRAINING_KERNELS: readonly string[] = [
  tf.Conv2DBackpropFilter,
  tf.Conv2DBackpropInput,
  tf.MaxPoolGrad,
  tf.Sum,
];

type Shape4 = [number, number, number, number];

/** The wasm kernels this module replaced, kept for the cases it does not handle. */
let originalBackpropInput: tf.KernelConfig | undefined;
let originalSum: tf.KernelConfig | undefined;

function explicitPad(top: number, bottom: number, left: number, right: number): number[][] {
  return [
    [0, 0],
    [top, bottom],
    [left, right],
    [0, 0],
  ];
}

function isOne(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (typeof v === 'number') return v === 1;
  return Array.isArray(v) && v.every((d) => d === 1);
}

function checkCommon(
  kernel: string,
  attrs: { dataFormat?: string; dilations?: unknown },
  a: TensorInfo,
  b: TensorInfo,
  shape: readonly number[],
): void {
  const where = `${kernel} (wasm, HistoFed)`;
  if (attrs.dataFormat !== undefined && attrs.dataFormat !== 'NHWC') {
    throw new Error(`${where}: dataFormat '${attrs.dataFormat}' is not supported; use 'NHWC' (channels last)`);
  }
  if (!isOne(attrs.dilations)) {
    throw new Error(`${where}: dilations ${JSON.stringify(attrs.dilations)} are not supported; only 1`);
  }
  if (a.shape.length !== 4 || b.shape.length !== 4 || shape.length !== 4) {
    throw new Error(`${where}: expected rank-4 tensors and shape, got [${a.shape}], [${b.shape}] and [${shape}]`);
  }
  if (a.dtype !== 'float32' || b.dtype !== 'float32') {
    throw new Error(`${where}: only float32 is supported, got ${a.dtype}/${b.dtype}`);
  }
}

function checkDy(kernel: string, dy: TensorInfo, info: tf.backend_util.Conv2DInfo): void {
  const [b, outH, outW, outC] = dy.shape;
  if (b !== info.batchSize || outH !== info.outHeight || outW !== info.outWidth || outC !== info.outChannels) {
    throw new Error(
      `${kernel} (wasm, HistoFed): dy shape [${dy.shape}] does not match the convolution output [${info.outShape}]`,
    );
  }
}

/**
 * Conv2DBackpropFilter for the wasm backend (NHWC, dilation 1, float32): on the SIMD kernels, or
 * as a convolution on XNNPACK when they are unavailable.
 */
export function conv2DBackpropFilterWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as KernelBackend;
  const { x, dy } = args.inputs as { x: TensorInfo; dy: TensorInfo };
  const attrs = (args.attrs ?? {}) as unknown as tf.Conv2DBackpropFilterAttrs & { dilations?: unknown };
  const { strides, pad, dimRoundingMode, filterShape } = attrs;
  checkCommon(tf.Conv2DBackpropFilter, attrs, x, dy, filterShape);

  const info = tf.backend_util.computeConv2DInfo(
    x.shape as Shape4,
    filterShape,
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    'channelsLast',
  );
  checkDy(tf.Conv2DBackpropFilter, dy, info);
  const simd = simdKernels(backend as unknown as WasmBackend);
  if (simd !== null) return conv2DBackpropFilterSimd(backend as unknown as WasmBackend, simd, x, dy, info);
  return conv2DBackpropFilterTransposed(backend, x, dy, info);
}

/** The filter gradient as a forward convolution of x with dy (batch and channels swapped) on XNNPACK. */
export function conv2DBackpropFilterTransposed(
  backend: KernelBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { top, bottom, left, right } = info.padInfo;
  const { filterHeight: fh, filterWidth: fw, inChannels: inC, outChannels: outC } = info;

  return withTemps(backend, (temps) => {
    const xT = runWasmKernel(tf.Transpose, backend, { x }, { perm: [3, 1, 2, 0] }); // [c, H, W, b]
    temps.push(xT);
    const dyT = runWasmKernel(tf.Transpose, backend, { x: dy }, { perm: [1, 2, 0, 3] }); // [oh, ow, b, o]
    temps.push(dyT);
    const corr = runWasmKernel(
      tf.Conv2D,
      backend,
      { x: xT, filter: dyT },
      {
        strides: [1, 1],
        pad: explicitPad(top, bottom, left, right),
        dataFormat: 'NHWC',
        dilations: [info.strideHeight, info.strideWidth],
      },
    ); // [c, >=fh, >=fw, o]
    temps.push(corr);
    let cropped = corr;
    if (corr.shape[1] !== fh || corr.shape[2] !== fw) {
      cropped = runWasmKernel(tf.Slice, backend, { x: corr }, { begin: [0, 0, 0, 0], size: [inC, fh, fw, outC] });
      temps.push(cropped);
    }
    return runWasmKernel(tf.Transpose, backend, { x: cropped }, { perm: [1, 2, 0, 3] }); // [fh, fw, c, o]
  });
}

/** Conv2DBackpropInput for the wasm backend (NHWC, dilation 1, float32), on XNNPACK Conv2D. */
export function conv2DBackpropInputWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as KernelBackend;
  const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
  const attrs = (args.attrs ?? {}) as unknown as tf.Conv2DBackpropInputAttrs & { dilations?: unknown };
  const { strides, pad, dimRoundingMode, inputShape } = attrs;
  checkCommon(tf.Conv2DBackpropInput, attrs, dy, filter, inputShape);

  const info = tf.backend_util.computeConv2DInfo(
    inputShape as Shape4,
    filter.shape as Shape4,
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    'channelsLast',
  );
  checkDy(tf.Conv2DBackpropInput, dy, info);
  const [b, inH, inW] = inputShape;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw, outHeight: oh, outWidth: ow } = info;
  const o = info.outChannels;
  // Full correlation of the stride-dilated dy (length (oh - 1) * sh + 1) with the rotated filter.
  const padTop = fh - 1 - info.padInfo.top;
  const padLeft = fw - 1 - info.padInfo.left;
  const padBottom = inH - (oh - 1) * sh + info.padInfo.top - 1;
  const padRight = inW - (ow - 1) * sw + info.padInfo.left - 1;
  if (padTop < 0 || padLeft < 0 || padBottom < 0 || padRight < 0) {
    if (originalBackpropInput === undefined) {
      throw new Error(`Conv2DBackpropInput (wasm, HistoFed): padding ${JSON.stringify(pad)} is not supported`);
    }
    return originalBackpropInput.kernelFunc(args as Parameters<tf.KernelFunc>[0]) as TensorInfo;
  }

  return withTemps(backend, (temps) => {
    let dyD = dy;
    let bottom = padBottom;
    let right = padRight;
    if (sh > 1 || sw > 1) {
      // [b, oh, ow, o] -> [b, oh, 1, ow, 1, o] -> pad -> [b, oh * sh, ow * sw, o]: sh - 1 (sw - 1)
      // zeros after every row (column); the trailing ones replace part of the bottom (right) padding.
      const r = runWasmKernel(tf.Reshape, backend, { x: dy }, { shape: [b, oh, 1, ow, 1, o] });
      temps.push(r);
      const p = runWasmKernel(
        tf.PadV2,
        backend,
        { x: r },
        {
          paddings: [
            [0, 0],
            [0, 0],
            [0, sh - 1],
            [0, 0],
            [0, sw - 1],
            [0, 0],
          ],
          constantValue: 0,
        },
      );
      temps.push(p);
      dyD = runWasmKernel(tf.Reshape, backend, { x: p }, { shape: [b, oh * sh, ow * sw, o] });
      temps.push(dyD);
      // Where the padding is smaller than the trailing zeros, cut them instead.
      const cutH = padBottom < sh - 1;
      const cutW = padRight < sw - 1;
      bottom = cutH ? padBottom : padBottom - (sh - 1);
      right = cutW ? padRight : padRight - (sw - 1);
      if (cutH || cutW) {
        const h = cutH ? (oh - 1) * sh + 1 : oh * sh;
        const w = cutW ? (ow - 1) * sw + 1 : ow * sw;
        dyD = runWasmKernel(tf.Slice, backend, { x: dyD }, { begin: [0, 0, 0, 0], size: [b, h, w, o] });
        temps.push(dyD);
      }
    }
    const rotated = runWasmKernel(tf.Reverse, backend, { x: filter }, { dims: [0, 1] }); // [fh, fw, c, o]
    temps.push(rotated);
    const swapped = runWasmKernel(tf.Transpose, backend, { x: rotated }, { perm: [0, 1, 3, 2] }); // [fh, fw, o, c]
    temps.push(swapped);
    return runWasmKernel(
      tf.Conv2D,
      backend,
      { x: dyD, filter: swapped },
      { strides: [1, 1], pad: explicitPad(padTop, bottom, padLeft, right), dataFormat: 'NHWC', dilations: [1, 1] },
    );
  });
}

/**
 * MaxPoolGrad for the wasm backend: each output gradient goes to the first maximum of its window in
 * row-major order (as the cpu backend does; NaN and -Infinity windows get none). On the SIMD
 * kernels for channel counts that are multiples of 4, else the JavaScript loop below.
 */
export function maxPoolGradWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { dy, input } = args.inputs as { dy: TensorInfo; input: TensorInfo };
  const { filterSize, strides, pad, dimRoundingMode } = (args.attrs ?? {}) as unknown as tf.MaxPoolGradAttrs;
  if (input.dtype !== 'float32' || dy.dtype !== 'float32' || input.shape.length !== 4) {
    throw new Error(`MaxPoolGrad (wasm, HistoFed): expected rank-4 float32 tensors, got ${input.dtype} [${input.shape}]`);
  }
  const info = tf.backend_util.computePool2DInfo(input.shape as Shape4, filterSize, strides, 1, pad, dimRoundingMode);
  checkDy(tf.MaxPoolGrad, dy, info);
  const simd = maxPoolGradSimdApplies(input) ? simdKernels(backend) : null;
  if (simd !== null) return maxPoolGradSimd(backend, simd, dy, input, info);
  return maxPoolGradLoop(backend, dy, input, info);
}

/** MaxPoolGrad in JavaScript over the wasm heap (any channel count; the SIMD kernels' fallback). */
export function maxPoolGradLoop(
  backend: WasmBackend,
  dy: TensorInfo,
  input: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth, strideHeight, strideWidth } = info;
  const { filterHeight, filterWidth } = info;
  const { top, left } = info.padInfo;

  const out = backend.makeOutput([...input.shape], 'float32');
  // Views taken after the allocation above (an allocation may grow and detach the heap).
  const x = backend.typedArrayFromHeap(input) as Float32Array;
  const g = backend.typedArrayFromHeap(dy) as Float32Array;
  const dx = backend.typedArrayFromHeap(out) as Float32Array;
  dx.fill(0);
  const best = new Float32Array(c);
  const bestAt = new Int32Array(c);
  for (let b = 0; b < batchSize; b++) {
    const xBatch = b * inHeight * inWidth * c;
    for (let oy = 0; oy < outHeight; oy++) {
      const y0 = Math.max(0, oy * strideHeight - top);
      const y1 = Math.min(inHeight, oy * strideHeight - top + filterHeight);
      for (let ox = 0; ox < outWidth; ox++) {
        const x0 = Math.max(0, ox * strideWidth - left);
        const x1 = Math.min(inWidth, ox * strideWidth - left + filterWidth);
        best.fill(Number.NEGATIVE_INFINITY);
        bestAt.fill(-1);
        for (let yy = y0; yy < y1; yy++) {
          for (let xx = x0; xx < x1; xx++) {
            const base = xBatch + (yy * inWidth + xx) * c;
            for (let d = 0; d < c; d++) {
              const v = x[base + d];
              if (v > best[d]) {
                best[d] = v;
                bestAt[d] = base + d;
              }
            }
          }
        }
        const gBase = ((b * outHeight + oy) * outWidth + ox) * c;
        for (let d = 0; d < c; d++) {
          if (bestAt[d] >= 0) dx[bestAt[d]] += g[gBase + d];
        }
      }
    }
  }
  return out;
}

/**
 * Sum for the wasm backend: reductions of a float32 [..., c] tensor (c a multiple of 4) over all
 * axes but the last — the bias gradients — on the SIMD kernels; everything else goes to wasm's own
 * Sum kernel.
 */
export function sumWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x } = args.inputs as { x: TensorInfo };
  const { axis, keepDims } = (args.attrs ?? {}) as unknown as tf.SumAttrs;
  const simd = isLeadingAxesSum(x, axis) ? simdKernels(backend) : null;
  if (simd !== null) return leadingAxesSumSimd(backend, simd, x, keepDims);
  if (originalSum === undefined) throw new Error('Sum (wasm, HistoFed): wasm backend has no Sum kernel');
  return originalSum.kernelFunc(args as Parameters<tf.KernelFunc>[0]) as TensorInfo;
}

const OURS = Symbol.for('histofed.wasmTrainingKernel');

function isOurs(config: tf.KernelConfig | undefined): boolean {
  return config !== undefined && (config.kernelFunc as unknown as Record<symbol, unknown>)[OURS] === true;
}

function mark(f: (args: KernelArgs) => TensorInfo): tf.KernelFunc {
  Object.defineProperty(f, OURS, { value: true });
  return f as unknown as tf.KernelFunc;
}

/**
 * Registers `kernelFunc` as wasm's `name` kernel unless already done, replacing wasm's own (whose
 * setup and dispose functions are kept: wasm's kernels bind their C++ functions in setupFunc, which
 * must still run at backend initialisation). Returns the replaced kernel, if any.
 */
function replaceKernel(
  name: string,
  kernelFunc: (args: KernelArgs) => TensorInfo,
): { replaced: tf.KernelConfig | undefined; done: boolean } {
  const existing = tf.getKernel(name, 'wasm');
  if (isOurs(existing)) return { replaced: undefined, done: false };
  if (existing !== undefined) tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({
    kernelName: name,
    backendName: 'wasm',
    kernelFunc: mark(kernelFunc),
    setupFunc: existing?.setupFunc,
    disposeFunc: existing?.disposeFunc,
  });
  return { replaced: existing, done: true };
}

/**
 * Registers the training kernels for the 'wasm' backend: adds Conv2DBackpropFilter and replaces
 * Conv2DBackpropInput (keeping wasm's own for paddings larger than the filter), MaxPoolGrad and Sum
 * (keeping wasm's own for the reductions it does not handle). Idempotent. Call it after loading
 * @tensorflow/tfjs-backend-wasm; selectBackend('wasm') does.
 */
export function registerWasmTrainingKernels(): void {
  if (tf.getKernel(tf.Conv2DBackpropFilter, 'wasm') === undefined) {
    tf.registerKernel({
      kernelName: tf.Conv2DBackpropFilter,
      backendName: 'wasm',
      kernelFunc: mark(conv2DBackpropFilterWasm),
    });
  }
  replaceKernel(tf.MaxPoolGrad, maxPoolGradWasm);
  const input = replaceKernel(tf.Conv2DBackpropInput, conv2DBackpropInputWasm);
  if (input.done) originalBackpropInput = input.replaced;
  const sum = replaceKernel(tf.Sum, sumWasm);
  if (sum.done) originalSum = sum.replaced;
}
