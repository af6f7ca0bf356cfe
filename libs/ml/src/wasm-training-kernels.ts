/**
 * Training kernels for `@tensorflow/tfjs-backend-wasm` 4.22.
 *
 * A training step of the HistoFed CNNs needs, besides forward ops, gradient kernels that the wasm
 * backend lacks or runs slowly. This module registers for 'wasm' (`WASM_TRAINING_KERNELS`), each
 * replaced kernel keeping wasm's own for the cases it does not handle:
 * - Conv2DBackpropFilter — added (wasm has none): from dy's nonzeros (after relu and max pool most
 *   of dy is zero), else a dense SIMD product (wasm-kernels/conv2d-backprop-filter.ts).
 * - Conv2DBackpropInput — replaced (a slow direct loop): gathered from dy's nonzeros
 *   (wasm-kernels/conv2d-backprop-input.ts).
 * - DepthwiseConv2dNativeBackpropFilter / …Input — added (wasm has neither; a MobileNetV2 cannot be
 *   fine-tuned without them; wasm-kernels/depthwise-conv2d-backprop.ts).
 * - MaxPoolGrad — replaced (a slow direct loop): SIMD compare-and-select
 *   (wasm-kernels/max-pool-grad.ts).
 * - Sum and Add — replaced for bias gradients and bias additions (wasm's Sum transposes first;
 *   wasm-kernels/bias.ts) and, with Mean and Multiply, for a squeeze-and-excitation gate's spatial
 *   mean/sum and channel-broadcast product (wasm-kernels/channel-gate.ts).
 * - Identity and Cast to the tensor's own dtype — replaced: they share the data instead of copying.
 * - FusedConv2D — replaced for 1x1 convolutions without bias or activation (MobileNetV2's expand
 *   and project layers), which with both their gradients are SIMD matrix products
 *   (wasm-kernels/pointwise-conv.ts).
 * - DepthwiseConv2dNative — replaced at stride 1 with centred padding: on the depthwise
 *   input-gradient kernels with the filter rotated (faster than XNNPACK there).
 * - HistoFed's own kernels, one pass each instead of a composition: `HistoFedClipByValueGrad`
 *   (ClipByValue's gradient, Keras' ReLU6; wasm-kernels/clip-gradient.ts), `HistoFedScaleShift` and
 *   `HistoFedScaleShiftGrad` (FrozenBatchNorm's x * scale + shift and its gradient;
 *   wasm-kernels/scale-shift.ts), `HistoFedReluGrad` (wasm-kernels/relu-gradient.ts). The ClipByValue,
 *   Relu and Mean gradients are registered for every backend and take these kernels (Mean: ones from
 *   the Fill kernel) on wasm only.
 * wasm's other gaps — `UnsortedSegmentSum`, FFT, complex numbers — are not used by our models (see
 * `WASM_MISSING_TRAINING_KERNELS`).
 *
 * Two kinds of implementation. Convolutions on wasm's own XNNPACK `Conv2D`, called on TensorInfos.
 * And HistoFed's WebAssembly SIMD kernels (wasm-kernels/simd-kernels.ts): a small module assembled
 * at first use from TypeScript (wasm-kernels/wasm-asm.ts, no binary blob) and instantiated on the
 * wasm backend's WebAssembly.Memory, so its loops read and write tensors in place; JavaScript
 * drives the outer loops.
 *
 * Fallbacks. dy denser than a kernel's threshold (checked on the first image) or non-finite values
 * where zeros are skipped (0 * Infinity is NaN) send the sparse filter gradient to the dense SIMD
 * kernel and the input gradient to XNNPACK. Where the SIMD module cannot be built (an engine without
 * WebAssembly SIMD, a tfjs-backend-wasm build that does not expose its memory) every kernel takes its
 * fallback: the filter gradient as an XNNPACK correlation of x with dy (batch and channels swapped:
 * x -> [c, H, W, b], dy -> [oh, ow, b, o] as the filter, conv2d(stride 1, dilation = stride) ->
 * slice -> [fh, fw, c, o]); the input gradient as an XNNPACK convolution of dy dilated by the stride
 * and padded by (f - 1 - pad) with the filter rotated 180 degrees, [fh, fw, o, c] (explicit paddings
 * larger than the filter: wasm's own kernel); max-pool and depthwise gradients in JavaScript over
 * the heap; wasm's own FusedConv2D, DepthwiseConv2dNative, Sum, Add, Identity, Cast, Mean and
 * Multiply; tfjs-core's Mean, ClipByValue and Relu gradients; add(mul(x, scale), shift) for
 * FrozenBatchNorm. `setWasmFastPathsEnabled(false)` selects all these fallbacks, for tests and
 * benchmarks; `setWasmGateKernelsEnabled` and the other switches below turn single groups off.
 *
 * Every kernel frees its intermediates (`backend.disposeData`). The other convolution gradients
 * support NHWC, dilation 1 and float32 only; anything else throws a clear error.
 * `wasm-training-kernels.spec.ts` and the spec files in wasm-kernels/ check every kernel, on its
 * fast path and on its fallback, against the `cpu` backend (strides, paddings, odd and even sizes,
 * batch, filter and channel counts, broadcast shapes, non-finite values, second-order gradients)
 * and check that nothing leaks.
 *
 * Measurements and the history behind the thresholds: bench/train/KERNELS.md.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, TensorInfo } from '@tensorflow/tfjs-core';
import { biasAddOperands, biasAddSimd, isLeadingAxesSum, leadingAxesSumSimd } from './wasm-kernels/bias';
import {
  channelGateOperands,
  channelGateSimd,
  isMiddleAxesReduction,
  middleAxesReduceSimd,
} from './wasm-kernels/channel-gate';
import {
  CLIP_BY_VALUE_GRAD,
  type ClipByValueGradAttrs,
  clipByValueGradApplies,
  clipByValueGradWasm,
} from './wasm-kernels/clip-gradient';
import { conv2DBackpropFilterSimd, conv2DBackpropFilterSparse } from './wasm-kernels/conv2d-backprop-filter';
import { conv2DBackpropInputSimd } from './wasm-kernels/conv2d-backprop-input';
import {
  depthwiseConv2dForwardSimd,
  depthwiseConv2dNativeBackpropFilterWasm,
  depthwiseConv2dNativeBackpropInputWasm,
} from './wasm-kernels/depthwise-conv2d-backprop';
import { maxPoolGradSimd, maxPoolGradSimdApplies } from './wasm-kernels/max-pool-grad';
import {
  POINTWISE_SPARSE_DENSITY,
  isPointwise,
  pointwiseBackpropFilter,
  pointwiseBackpropInput,
  pointwiseConv2D,
} from './wasm-kernels/pointwise-conv';
import { RELU_GRAD, reluGradApplies, reluGradWasm } from './wasm-kernels/relu-gradient';
import {
  SCALE_SHIFT,
  SCALE_SHIFT_GRAD,
  scaleShiftApplies,
  scaleShiftGradWasm,
  scaleShiftKernelsOn,
  scaleShiftWasm,
} from './wasm-kernels/scale-shift';
import { setSimdKernelsEnabled, simdKernels } from './wasm-kernels/simd-kernels';
import { type KernelArgs, type WasmBackend, runWasmKernel, withTemps } from './wasm-kernels/wasm-heap';

/** Kernels the cpu backend has and wasm does not, that some model might need for training. */
export const WASM_MISSING_TRAINING_KERNELS: readonly string[] = [
  'Conv2DBackpropFilter', // provided by this module
  'DepthwiseConv2dNativeBackpropFilter', // provided by this module (a MobileNetV2's depthwise layers)
  'DepthwiseConv2dNativeBackpropInput', // provided by this module
  'UnsortedSegmentSum', // gradient of gather; not provided (no embeddings in our models)
];

/** The kernels this module registers for 'wasm'. */
export const WASM_TRAINING_KERNELS: readonly string[] = [
  tf.Conv2DBackpropFilter,
  tf.Conv2DBackpropInput,
  tf.MaxPoolGrad,
  tf.Sum,
  tf.Add,
  tf.Identity,
  tf.Cast,
  tf.Mean,
  tf.Multiply,
  tf.DepthwiseConv2dNativeBackpropFilter,
  tf.DepthwiseConv2dNativeBackpropInput,
  CLIP_BY_VALUE_GRAD, // HistoFed's own kernel (no tfjs op): the gradient of ClipByValue in one pass
  tf.FusedConv2D, // 1x1 convolutions without bias or activation (MobileNetV2) on HistoFed's SIMD product
  tf.DepthwiseConv2dNative, // stride 1, centred padding: on the depthwise input-gradient kernels
  SCALE_SHIFT, // HistoFed's own: x * scale + shift per channel in one pass (FrozenBatchNorm)
  SCALE_SHIFT_GRAD, // HistoFed's own: its three gradients in one pass
  RELU_GRAD, // HistoFed's own: the gradient of Relu in one pass
];

let fastPaths = true;

/**
 * Turns this module's fast paths off — the SIMD kernels and Identity's shared data — so that every
 * kernel takes its fallback (the filter gradient as an XNNPACK convolution, max-pool gradient and
 * depthwise convolution gradients in JavaScript, wasm's own FusedConv2D, DepthwiseConv2dNative,
 * Sum, Add, Identity, Cast, Mean and Multiply, tfjs-core's Mean, ClipByValue and Relu gradients,
 * FrozenBatchNorm's add(mul(x, scale), shift)), as the wasm backend trained before them; or back on
 * (the default). For tests and benchmarks.
 */
export function setWasmFastPathsEnabled(enabled: boolean): void {
  fastPaths = enabled;
  setSimdKernelsEnabled(enabled);
}

let gateKernels = true;

/**
 * Turns the SIMD kernels of a squeeze-and-excitation gate (Mean and Sum over the spatial axes,
 * Multiply by a [b, 1, 1, c] gate) off — wasm's own Mean, Sum and Multiply then run — or back on
 * (the default), leaving the other fast paths as they are. For A/B benchmarks.
 */
export function setWasmGateKernelsEnabled(enabled = true): void {
  gateKernels = enabled;
}

let pointwiseKernels = true;

/**
 * Turns the 1x1-convolution kernels (wasm-kernels/pointwise-conv.ts: FusedConv2D and both
 * gradients of a 1x1, stride-1 convolution as SIMD matrix products) off — the former paths then
 * run (XNNPACK, the sparse and dense SIMD gradient kernels) — or back on (the default), leaving the
 * other fast paths as they are. For A/B benchmarks.
 */
export function setWasmPointwiseKernelsEnabled(enabled = true): void {
  pointwiseKernels = enabled;
}

let depthwiseForward = true;

/**
 * Turns the forward depthwise convolution on HistoFed's kernels (stride 1, centred padding:
 * `depthwiseConv2dNativeWasm`) off — wasm's own (XNNPACK) then runs — or back on (the default),
 * leaving the other fast paths as they are. For A/B benchmarks.
 */
export function setWasmDepthwiseForwardEnabled(enabled = true): void {
  depthwiseForward = enabled;
}

let scaleShiftKernels = true;

/**
 * Turns the kernels of FrozenBatchNorm's per-channel x * scale + shift and of its gradient
 * (wasm-kernels/scale-shift.ts, `channelScaleShift`) off — the tf composition add(mul(x, scale),
 * shift) then runs — or back on (the default), leaving the other fast paths as they are. For A/B
 * benchmarks.
 */
export function setWasmScaleShiftKernelsEnabled(enabled = true): void {
  scaleShiftKernels = enabled;
}

let reluGradKernel = true;

/**
 * Turns the one-pass Relu gradient (wasm-kernels/relu-gradient.ts) off — tfjs-core's gradient then
 * runs — or back on (the default), leaving the other fast paths as they are. For A/B benchmarks.
 */
export function setWasmReluGradKernelEnabled(enabled = true): void {
  reluGradKernel = enabled;
}

export { setConv2DBackpropInputMaxDensity } from './wasm-kernels/conv2d-backprop-input';
export { setConv2DBackpropFilterMaxDensity } from './wasm-kernels/conv2d-backprop-filter';

type Shape4 = [number, number, number, number];

/** The wasm kernels this module replaced, kept for the cases it does not handle. */
let originalBackpropInput: tf.KernelConfig | undefined;
let originalSum: tf.KernelConfig | undefined;
let originalAdd: tf.KernelConfig | undefined;
let originalIdentity: tf.KernelConfig | undefined;
let originalCast: tf.KernelConfig | undefined;
let originalMean: tf.KernelConfig | undefined;
let originalMultiply: tf.KernelConfig | undefined;
let originalFusedConv2D: tf.KernelConfig | undefined;
let originalDepthwise: tf.KernelConfig | undefined;

/** Hands a call over to the wasm backend's own kernel that a HistoFed kernel replaced. */
function callOriginal(original: tf.KernelConfig | undefined, name: string, args: KernelArgs): TensorInfo {
  if (original === undefined) throw new Error(`${name} (wasm, HistoFed): wasm backend has no ${name} kernel`);
  return original.kernelFunc(args as Parameters<tf.KernelFunc>[0]) as TensorInfo;
}

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
  if (simd !== null) {
    const wasm = backend as unknown as WasmBackend;
    if (pointwiseKernels && isPointwise(info)) {
      const dw =
        conv2DBackpropFilterSparse(wasm, simd, x, dy, info, POINTWISE_SPARSE_DENSITY) ??
        pointwiseBackpropFilter(wasm, x, dy, info);
      if (dw !== null) return dw;
    }
    return conv2DBackpropFilterSparse(wasm, simd, x, dy, info) ?? conv2DBackpropFilterSimd(wasm, simd, x, dy, info);
  }
  return conv2DBackpropFilterTransposed(backend, x, dy, info);
}

/** The filter gradient as a forward convolution of x with dy (batch and channels swapped) on XNNPACK. */
function conv2DBackpropFilterTransposed(
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

/**
 * Conv2DBackpropInput for the wasm backend (NHWC, dilation 1, float32): on the SIMD kernels from
 * dy's nonzeros, or, for dense dy, non-finite filters or without the SIMD kernels, on XNNPACK Conv2D.
 */
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
  const simd = simdKernels(backend as unknown as WasmBackend);
  if (simd !== null) {
    const wasm = backend as unknown as WasmBackend;
    const dx =
      pointwiseKernels && isPointwise(info)
        ? (conv2DBackpropInputSimd(wasm, simd, dy, filter, info, POINTWISE_SPARSE_DENSITY) ??
          pointwiseBackpropInput(wasm, dy, filter, info))
        : conv2DBackpropInputSimd(wasm, simd, dy, filter, info);
    if (dx !== null) return dx;
  }
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
 * FusedConv2D for the wasm backend: a 1x1 convolution (stride 1, no padding, NHWC, float32) without
 * bias, PReLU weights or activation (tfjs-layers' Conv2D with useBias false and a linear
 * activation: MobileNetV2's expand and project layers) on HistoFed's SIMD matrix product
 * (wasm-kernels/pointwise-conv.ts); everything else goes to wasm's own kernel (XNNPACK).
 */
export function fusedConv2DWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x, filter, bias, preluActivationWeights } = args.inputs as {
    x: TensorInfo;
    filter: TensorInfo;
    bias?: TensorInfo;
    preluActivationWeights?: TensorInfo;
  };
  const attrs = (args.attrs ?? {}) as unknown as tf.FusedConv2DAttrs;
  const plain =
    pointwiseKernels &&
    bias == null &&
    preluActivationWeights == null &&
    (attrs.activation === undefined || attrs.activation === null || attrs.activation === 'linear') &&
    (attrs.dataFormat === undefined || attrs.dataFormat === 'NHWC') &&
    x.shape.length === 4 &&
    filter.shape.length === 4 &&
    x.shape[3] === filter.shape[2] &&
    filter.shape[0] === 1 &&
    filter.shape[1] === 1;
  if (plain) {
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as Shape4,
      filter.shape as Shape4,
      attrs.strides,
      attrs.dilations ?? 1,
      attrs.pad,
      attrs.dimRoundingMode,
      false,
      'channelsLast',
    );
    const y = pointwiseConv2D(backend, x, filter, info);
    if (y !== null) return y;
  }
  return callOriginal(originalFusedConv2D, 'FusedConv2D', args);
}

/**
 * DepthwiseConv2dNative for the wasm backend: stride 1 with centred padding ('same', odd filters),
 * multiplier 1, float32, channels a multiple of 4 (MobileNetV2's stride-1 depthwise layers) on the
 * depthwise input-gradient SIMD kernels with the filter rotated (wasm-kernels/depthwise-conv2d-
 * backprop.ts, `depthwiseConv2dForwardSimd`); everything else goes to wasm's own kernel (XNNPACK).
 */
export function depthwiseConv2dNativeWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x, filter } = args.inputs as { x: TensorInfo; filter: TensorInfo };
  const attrs = (args.attrs ?? {}) as unknown as tf.DepthwiseConv2dNativeAttrs;
  const y = depthwiseForward ? depthwiseConv2dForwardSimd(backend, x, filter, attrs) : null;
  return y ?? callOriginal(originalDepthwise, 'DepthwiseConv2dNative', args);
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
function maxPoolGradLoop(
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
 * axes but the last — the bias gradients — and of a float32 [b, ..., c] tensor over the middle
 * axes ([1, 2] of NHWC: the gradient of a squeeze-and-excitation gate) on the SIMD kernels;
 * everything else goes to wasm's own Sum kernel.
 */
export function sumWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x } = args.inputs as { x: TensorInfo };
  const { axis, keepDims } = (args.attrs ?? {}) as unknown as tf.SumAttrs;
  const leading = isLeadingAxesSum(x, axis);
  const simd = leading || (gateKernels && isMiddleAxesReduction(x, axis)) ? simdKernels(backend) : null;
  if (simd !== null) {
    if (leading) return leadingAxesSumSimd(backend, simd, x, keepDims);
    return middleAxesReduceSimd(backend, simd, x, keepDims, false);
  }
  return callOriginal(originalSum, 'Sum', args);
}

/**
 * Add for the wasm backend: a float32 [c] bias added to a float32 [..., c] tensor (c a multiple of
 * 4; the layers' biases) on the SIMD kernels — the same float32 additions as wasm's own Add, which
 * handles everything else.
 */
export function addWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
  const operands = biasAddOperands(a, b);
  const simd = operands !== null ? simdKernels(backend) : null;
  if (operands !== null && simd !== null) return biasAddSimd(backend, simd, operands.x, operands.bias);
  return callOriginal(originalAdd, 'Add', args);
}

/**
 * Mean for the wasm backend: of a float32 [b, ..., c] tensor (c a multiple of 4) over the middle
 * axes ([1, 2] of NHWC: global average pooling, the squeeze of a squeeze-and-excitation gate) on
 * the SIMD kernels; everything else goes to wasm's own Mean kernel.
 */
export function meanWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x } = args.inputs as { x: TensorInfo };
  const { axis, keepDims } = (args.attrs ?? {}) as unknown as tf.MeanAttrs;
  const simd = gateKernels && isMiddleAxesReduction(x, axis) ? simdKernels(backend) : null;
  if (simd !== null) return middleAxesReduceSimd(backend, simd, x, keepDims, true);
  return callOriginal(originalMean, 'Mean', args);
}

/**
 * Multiply for the wasm backend: a float32 [b, ..., c] tensor (c a multiple of 4) times a float32
 * [b, 1, ..., 1, c] (or [1, ..., 1, c]) channel gate, in either order (the excitation of a
 * squeeze-and-excitation gate, its gradient dy * gate, and the Mean gradient dy * ones) on the SIMD
 * kernels — the same float32 products as wasm's own Multiply, which handles everything else.
 */
export function multiplyWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
  const operands = gateKernels ? channelGateOperands(a, b) : null;
  const simd = operands !== null ? simdKernels(backend) : null;
  if (operands !== null && simd !== null) return channelGateSimd(backend, simd, operands.x, operands.gate);
  return callOriginal(originalMultiply, 'Multiply', args);
}

/**
 * Identity for the wasm backend: the output shares the input's data (a reference more), as on the
 * cpu and webgl backends, instead of wasm's copy. tfjs-core's engine clones every tensor a gradient
 * will need with Identity (saveTensorsForBackwardMode), so on wasm each training step copied the
 * activations several times. Tensor data is never written after creation, so sharing is safe, as
 * for wasm's Reshape. Strings go to wasm's own kernel.
 */
export function identityWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x } = args.inputs as { x: TensorInfo };
  if (x.dtype === 'string' || !fastPaths) {
    return callOriginal(originalIdentity, 'Identity', args);
  }
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}

/**
 * Cast for the wasm backend: to the tensor's own dtype (the relu gradient casts step(x), already
 * float32, to float32) the output shares the input's data, as in identityWasm; wasm's Cast always
 * copies. Other casts, and strings, go to wasm's own kernel.
 */
export function castWasm(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { x } = args.inputs as { x: TensorInfo };
  const { dtype } = (args.attrs ?? {}) as unknown as tf.CastAttrs;
  if (x.dtype !== dtype || dtype === 'string' || !fastPaths) {
    return callOriginal(originalCast, 'Cast', args);
  }
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}

const OURS = Symbol.for('histofed.wasmTrainingKernel');

/**
 * The gradient of Mean on the wasm backend: tfjs-core's own formula, div(mul(dy reshaped to the
 * kept dims, ones(x.shape)), reduceSize), with the ones tensor from the Fill kernel instead of
 * tf.ones, which builds it as a JavaScript array and copies it into the wasm heap (once per
 * squeeze-and-excitation gate per step, an activation's size); and the division before the
 * broadcast (on the reshaped dy, not on x's shape: one full-size RealDiv less). The same values:
 * the same result. Other backends (and the fallbacks) use tfjs-core's gradient unchanged. Times:
 * bench/train/KERNELS.md.
 */
function meanGradient(original: tf.GradConfig): tf.GradConfig {
  type Gradients = Record<string, () => tf.Tensor>;
  const gradFunc = (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap): Gradients => {
    const [x] = saved;
    if (tf.getBackend() !== 'wasm' || !fastPaths || !gateKernels || Array.isArray(dy)) {
      return original.gradFunc(dy, saved, attrs);
    }
    const { axis } = attrs as unknown as tf.MeanAttrs;
    const axes = tf.util.parseAxisParam(axis, x.shape);
    const reduceSize = tf.util.sizeFromShape(tf.backend_util.computeOutAndReduceShapes(x.shape, axes)[1]);
    return {
      x: () => {
        const expandedShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
        const expandedDy = tf.reshape(dy, expandedShape);
        // dy / size, then broadcast by the product with ones: fl(fl(dy / size) * 1) = fl(fl(dy * 1) / size),
        // the same values as tfjs-core's order, with the division on [b, 1, 1, c] instead of x's shape.
        return tf.mul(tf.div(expandedDy, reduceSize), tf.fill(x.shape, 1, 'float32'));
      },
    };
  };
  Object.defineProperty(gradFunc, OURS, { value: true });
  return { kernelName: tf.Mean, inputsToSave: ['x'], gradFunc };
}

/** Whether the gradient of ClipByValue on x and dy takes HistoFed's CLIP_BY_VALUE_GRAD kernel. */
function clipGradientFast(x: tf.Tensor, dy: tf.Tensor): boolean {
  return (
    fastPaths &&
    tf.getBackend() === 'wasm' &&
    x.size > 0 &&
    clipByValueGradApplies(x, dy) &&
    tf.getKernel(CLIP_BY_VALUE_GRAD, 'wasm') !== undefined
  );
}

/**
 * dy where min <= x <= max (min and max as float32), else 0: tfjs-core's ClipByValue gradient,
 * where(logicalAnd(greaterEqual(x, min), lessEqual(x, max)), dy, zerosLike(dy)) — five kernels,
 * each slow on wasm for its bool tensors (with tfjs-layers' ReLU(maxValue 6), Keras' ReLU6, a large
 * part of a MobileNetV2 fine-tuning step: bench/train/KERNELS.md) — as one CLIP_BY_VALUE_GRAD
 * kernel on wasm (same values: wasm-kernels/clip-gradient.ts), as that composition elsewhere and on
 * the fallbacks.
 */
function clipGradientOf(x: tf.Tensor, dy: tf.Tensor, attrs: ClipByValueGradAttrs): tf.Tensor {
  const { clipValueMin, clipValueMax } = attrs;
  if (clipGradientFast(x, dy)) {
    return tf.engine().runKernel(CLIP_BY_VALUE_GRAD, { x, dy }, { clipValueMin, clipValueMax }) as tf.Tensor;
  }
  return tf.where(
    tf.logicalAnd(tf.greaterEqual(x, clipValueMin), tf.lessEqual(x, clipValueMax)),
    dy,
    tf.zerosLike(dy),
  );
}

/**
 * The gradient of ClipByValue, registered for every backend but taking the CLIP_BY_VALUE_GRAD
 * kernel on wasm only (float32 x and dy, fast paths on); other backends, other operands and the
 * fallbacks call tfjs-core's gradient (`original`) unchanged.
 */
function clipByValueGradient(original: tf.GradConfig): tf.GradConfig {
  type Gradients = Record<string, () => tf.Tensor>;
  const gradFunc = (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap): Gradients => {
    const [x] = saved;
    if (Array.isArray(dy) || !clipGradientFast(x, dy)) return original.gradFunc(dy, saved, attrs);
    return { x: () => clipGradientOf(x, dy, attrs as unknown as ClipByValueGradAttrs) };
  };
  Object.defineProperty(gradFunc, OURS, { value: true });
  return { kernelName: tf.ClipByValue, inputsToSave: ['x'], gradFunc };
}

/**
 * The gradient of CLIP_BY_VALUE_GRAD itself (second-order gradients through a clip): linear in dy,
 * so the same masking of its gradient; zero with respect to x (where the clip's bounds cut is
 * piecewise constant in x). tfjs-core's composition has the same dy part; for x it fails (no
 * gradient for LogicalAnd), this gives the zeros that its GreaterEqual and Select gradients give.
 */
const clipByValueGradGradient: tf.GradConfig = {
  kernelName: CLIP_BY_VALUE_GRAD,
  inputsToSave: ['x'],
  gradFunc: (ddx: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
    const [x] = saved;
    const g = Array.isArray(ddx) ? ddx[0] : ddx;
    return {
      x: () => tf.zerosLike(x),
      dy: () => clipGradientOf(x, g, attrs as unknown as ClipByValueGradAttrs),
    };
  },
};

/** Whether channelScaleShift(x, scale, shift) takes HistoFed's SCALE_SHIFT kernels. */
function scaleShiftFast(x: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor): boolean {
  return (
    fastPaths &&
    scaleShiftKernels &&
    tf.getBackend() === 'wasm' &&
    x.size > 0 &&
    scaleShiftApplies(x, scale, shift) &&
    tf.getKernel(SCALE_SHIFT, 'wasm') !== undefined &&
    tf.getKernel(SCALE_SHIFT_GRAD, 'wasm') !== undefined &&
    scaleShiftKernelsOn(tf.backend() as unknown as WasmBackend) !== null
  );
}

/**
 * x * scale + shift with scale and shift of shape [c] broadcast over x [..., c] (FrozenBatchNorm):
 * on wasm (float32, c a multiple of 4, fast paths on) one SCALE_SHIFT kernel forward and one
 * SCALE_SHIFT_GRAD kernel backward (dx = dy * scale, dScale = sum(dy * x), dShift = sum(dy) over
 * all axes but the last) instead of Multiply, Add and, backward, two Multiply and two Sum — the same
 * values (wasm-kernels/scale-shift.ts); elsewhere, and on the fallbacks, add(mul(x, scale), shift).
 * Differentiable twice (SCALE_SHIFT_GRAD's gradient is registered, as tf ops).
 */
export function channelScaleShift(x: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor): tf.Tensor {
  if (!scaleShiftFast(x, scale, shift)) return tf.add(tf.mul(x, scale), shift);
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xs, s, b] = args as tf.Tensor[];
    const save = args[3] as tf.GradSaveFunc;
    const value = tf.engine().runKernel(SCALE_SHIFT, { x: xs, scale: s, shift: b }) as tf.Tensor;
    save([xs, s]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, ss] = saved;
        return tf.engine().runKernel(SCALE_SHIFT_GRAD, { dy, x: sx, scale: ss }) as tf.Tensor[];
      },
    };
  });
  return op(x, scale, shift);
}

/** Sum over all axes but the last ([..., c] -> [c]). */
function sumToChannels(t: tf.Tensor): tf.Tensor {
  return t.rank <= 1 ? t : tf.sum(t, [...Array(t.rank - 1).keys()]);
}

/**
 * The gradient of SCALE_SHIFT run directly (channelScaleShift's custom gradient calls
 * SCALE_SHIFT_GRAD itself): x: dy * scale, scale: sum(dy * x), shift: sum(dy).
 */
const scaleShiftGradient: tf.GradConfig = {
  kernelName: SCALE_SHIFT,
  inputsToSave: ['x', 'scale'],
  gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
    const [x, scale] = saved;
    const g = Array.isArray(dy) ? dy[0] : dy;
    const grads = () => tf.engine().runKernel(SCALE_SHIFT_GRAD, { dy: g, x, scale }) as tf.Tensor[];
    return { x: () => grads()[0], scale: () => grads()[1], shift: () => grads()[2] };
  },
};

/**
 * The gradient of SCALE_SHIFT_GRAD (second-order gradients through FrozenBatchNorm), from its
 * outputs' gradients gDx, gDScale, gDShift: dy: gDx * scale + gDScale * x + gDShift, x: gDScale * dy,
 * scale: sum(gDx * dy) (as tf ops: any backend).
 */
const scaleShiftGradGradient: tf.GradConfig = {
  kernelName: SCALE_SHIFT_GRAD,
  inputsToSave: ['dy', 'x', 'scale'],
  gradFunc: (dys: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
    const [dy, x, scale] = saved;
    const [gDx, gDScale, gDShift] = dys as tf.Tensor[];
    return {
      dy: () => tf.add(tf.add(tf.mul(gDx, scale), tf.mul(gDScale, x)), gDShift),
      x: () => tf.mul(gDScale, dy),
      scale: () => sumToChannels(tf.mul(gDx, dy)),
    };
  },
};

/** Whether the gradient of Relu on x and dy takes HistoFed's RELU_GRAD kernel. */
function reluGradientFast(x: tf.Tensor, dy: tf.Tensor): boolean {
  return (
    fastPaths &&
    reluGradKernel &&
    tf.getBackend() === 'wasm' &&
    x.size > 0 &&
    reluGradApplies(x, dy) &&
    tf.getKernel(RELU_GRAD, 'wasm') !== undefined
  );
}

/** dy * step(x) (step(NaN) = NaN): as one RELU_GRAD kernel on wasm, as tfjs-core's composition elsewhere. */
function reluGradientOf(x: tf.Tensor, dy: tf.Tensor): tf.Tensor {
  if (reluGradientFast(x, dy)) return tf.engine().runKernel(RELU_GRAD, { x, dy }) as tf.Tensor;
  return tf.mul(dy, tf.cast(tf.step(x), 'float32'));
}

/**
 * The gradient of Relu, registered for every backend but taking the RELU_GRAD kernel on wasm only
 * (float32 x and dy, fast paths on); other backends, other operands and the fallbacks call
 * tfjs-core's gradient (`original`) unchanged.
 */
function reluGradient(original: tf.GradConfig): tf.GradConfig {
  type Gradients = Record<string, () => tf.Tensor>;
  const gradFunc = (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap): Gradients => {
    const [x] = saved;
    if (Array.isArray(dy) || !reluGradientFast(x, dy)) return original.gradFunc(dy, saved, attrs);
    return { x: () => reluGradientOf(x, dy) };
  };
  Object.defineProperty(gradFunc, OURS, { value: true });
  return { kernelName: tf.Relu, inputsToSave: ['x'], gradFunc };
}

/**
 * The gradient of RELU_GRAD itself (second-order gradients through a relu): linear in dy, so the
 * same product with its gradient; zero with respect to x (step is piecewise constant; tfjs-core's
 * Step gradient is zero too).
 */
const reluGradGradient: tf.GradConfig = {
  kernelName: RELU_GRAD,
  inputsToSave: ['x'],
  gradFunc: (ddx: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
    const [x] = saved;
    const g = Array.isArray(ddx) ? ddx[0] : ddx;
    return { x: () => tf.zerosLike(x), dy: () => reluGradientOf(x, g) };
  },
};

function isOurs(config: tf.KernelConfig | undefined): boolean {
  return config !== undefined && (config.kernelFunc as unknown as Record<symbol, unknown>)[OURS] === true;
}

function mark(f: (args: KernelArgs) => TensorInfo | TensorInfo[]): tf.KernelFunc {
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
 * Registers the training kernels for the 'wasm' backend: adds Conv2DBackpropFilter,
 * DepthwiseConv2dNativeBackpropFilter and DepthwiseConv2dNativeBackpropInput (each only where wasm
 * has none) and replaces Conv2DBackpropInput (keeping wasm's own for paddings larger than the
 * filter on the fallback), MaxPoolGrad, Sum, Add, Identity, Cast, Mean, Multiply and FusedConv2D
 * (keeping wasm's own for the cases they do not handle); adds HistoFed's HistoFedClipByValueGrad,
 * HistoFedScaleShift, HistoFedScaleShiftGrad and HistoFedReluGrad kernels and registers the Mean,
 * ClipByValue and Relu gradients that use Fill and those kernels on wasm (and tfjs-core's gradients
 * elsewhere). Idempotent. Call it after loading @tensorflow/tfjs-backend-wasm and tfjs-layers (whose
 * build registers tfjs-core's gradients); selectBackend('wasm') does.
 */
export function registerWasmTrainingKernels(): void {
  if (tf.getKernel(tf.Conv2DBackpropFilter, 'wasm') === undefined) {
    tf.registerKernel({
      kernelName: tf.Conv2DBackpropFilter,
      backendName: 'wasm',
      kernelFunc: mark(conv2DBackpropFilterWasm),
    });
  }
  if (tf.getKernel(tf.DepthwiseConv2dNativeBackpropFilter, 'wasm') === undefined) {
    tf.registerKernel({
      kernelName: tf.DepthwiseConv2dNativeBackpropFilter,
      backendName: 'wasm',
      kernelFunc: mark(depthwiseConv2dNativeBackpropFilterWasm),
    });
  }
  if (tf.getKernel(tf.DepthwiseConv2dNativeBackpropInput, 'wasm') === undefined) {
    tf.registerKernel({
      kernelName: tf.DepthwiseConv2dNativeBackpropInput,
      backendName: 'wasm',
      kernelFunc: mark(depthwiseConv2dNativeBackpropInputWasm),
    });
  }
  if (tf.getKernel(CLIP_BY_VALUE_GRAD, 'wasm') === undefined) {
    tf.registerKernel({ kernelName: CLIP_BY_VALUE_GRAD, backendName: 'wasm', kernelFunc: mark(clipByValueGradWasm) });
  }
  if (tf.getKernel(SCALE_SHIFT, 'wasm') === undefined) {
    tf.registerKernel({ kernelName: SCALE_SHIFT, backendName: 'wasm', kernelFunc: mark(scaleShiftWasm) });
  }
  if (tf.getKernel(SCALE_SHIFT_GRAD, 'wasm') === undefined) {
    tf.registerKernel({ kernelName: SCALE_SHIFT_GRAD, backendName: 'wasm', kernelFunc: mark(scaleShiftGradWasm) });
  }
  if (tf.getKernel(RELU_GRAD, 'wasm') === undefined) {
    tf.registerKernel({ kernelName: RELU_GRAD, backendName: 'wasm', kernelFunc: mark(reluGradWasm) });
  }
  replaceKernel(tf.MaxPoolGrad, maxPoolGradWasm);
  const input = replaceKernel(tf.Conv2DBackpropInput, conv2DBackpropInputWasm);
  if (input.done) originalBackpropInput = input.replaced;
  const sum = replaceKernel(tf.Sum, sumWasm);
  if (sum.done) originalSum = sum.replaced;
  const add = replaceKernel(tf.Add, addWasm);
  if (add.done) originalAdd = add.replaced;
  const identity = replaceKernel(tf.Identity, identityWasm);
  if (identity.done) originalIdentity = identity.replaced;
  const cast = replaceKernel(tf.Cast, castWasm);
  if (cast.done) originalCast = cast.replaced;
  const mean = replaceKernel(tf.Mean, meanWasm);
  if (mean.done) originalMean = mean.replaced;
  const multiply = replaceKernel(tf.Multiply, multiplyWasm);
  if (multiply.done) originalMultiply = multiply.replaced;
  const fused = replaceKernel(tf.FusedConv2D, fusedConv2DWasm);
  if (fused.done) originalFusedConv2D = fused.replaced;
  const depthwise = replaceKernel(tf.DepthwiseConv2dNative, depthwiseConv2dNativeWasm);
  if (depthwise.done) originalDepthwise = depthwise.replaced;
  const grad = tf.getGradient(tf.Mean);
  if (grad !== undefined && (grad.gradFunc as unknown as Record<symbol, unknown>)[OURS] !== true) {
    tf.registerGradient(meanGradient(grad));
  }
  const clipGrad = tf.getGradient(tf.ClipByValue);
  if (clipGrad !== undefined && (clipGrad.gradFunc as unknown as Record<symbol, unknown>)[OURS] !== true) {
    tf.registerGradient(clipByValueGradient(clipGrad));
  }
  if (tf.getGradient(CLIP_BY_VALUE_GRAD) === undefined) tf.registerGradient(clipByValueGradGradient);
  const reluGrad = tf.getGradient(tf.Relu);
  if (reluGrad !== undefined && (reluGrad.gradFunc as unknown as Record<symbol, unknown>)[OURS] !== true) {
    tf.registerGradient(reluGradient(reluGrad));
  }
  if (tf.getGradient(RELU_GRAD) === undefined) tf.registerGradient(reluGradGradient);
  if (tf.getGradient(SCALE_SHIFT) === undefined) tf.registerGradient(scaleShiftGradient);
  if (tf.getGradient(SCALE_SHIFT_GRAD) === undefined) tf.registerGradient(scaleShiftGradGradient);
}
