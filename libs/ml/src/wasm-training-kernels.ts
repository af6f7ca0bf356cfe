/**
 * Training kernels for `@tensorflow/tfjs-backend-wasm` 4.22.
 *
 * A training step of the HistoFed CNNs needs, besides forward ops, the gradient kernels
 * `Conv2DBackpropFilter`, `Conv2DBackpropInput`, `MaxPoolGrad`, `AvgPoolGrad` and the batch-norm,
 * relu (`Step`), softmax, reduction and Adam kernels. Of these the wasm backend only lacks
 * `Conv2DBackpropFilter`; fine-tuning a network with depthwise convolutions (a MobileNetV2) also
 * needs `DepthwiseConv2dNativeBackpropFilter` and `DepthwiseConv2dNativeBackpropInput`, which it
 * lacks too. This module adds all three (its other gaps — `UnsortedSegmentSum`, FFT, complex
 * numbers — are not used by our models; see `WASM_MISSING_TRAINING_KERNELS`). Its
 * `Conv2DBackpropInput` and `MaxPoolGrad` are slow direct loops, and its `Sum`, `Add`, `Identity`,
 * `Cast`, `Mean` and `Multiply` are slow at what a training step asks of them, so these are replaced
 * too (`WASM_TRAINING_KERNELS`), each keeping wasm's own kernel for the cases it does not handle;
 * on wasm the Mean gradient takes its ones from the Fill kernel (see the squeeze-and-excitation
 * section below), and the ClipByValue gradient (Keras' ReLU6) is one kernel of HistoFed's own,
 * `HistoFedClipByValueGrad`, instead of five (see the ClipByValue section below). For MobileNetV2
 * fine-tuning, `FusedConv2D` (1x1 convolutions) and `DepthwiseConv2dNative` (stride 1) are replaced
 * where HistoFed's kernels are faster than XNNPACK, and FrozenBatchNorm's scale-and-shift, its
 * gradient and the Relu gradient are one kernel each (`HistoFedScaleShift`, `HistoFedScaleShiftGrad`,
 * `HistoFedReluGrad`; see the last section below).
 *
 * Two kinds of implementation. Convolutions on wasm's own XNNPACK `Conv2D`, called on TensorInfos.
 * And HistoFed's WebAssembly SIMD kernels (wasm-kernels/simd-kernels.ts): a small module assembled
 * at first use from TypeScript (wasm-kernels/wasm-asm.ts, no binary blob) and instantiated on the
 * wasm backend's WebAssembly.Memory, so its loops read and write tensors in place; JavaScript
 * drives the outer loops. Where that module cannot be built (an engine without WebAssembly SIMD, a
 * tfjs-backend-wasm build that does not expose its memory) every kernel takes its fallback, which
 * is also what `setWasmFastPathsEnabled(false)` selects for tests and benchmarks.
 *
 * Times per call below: small-cnn, 128 px, batch 32, one step, on 2 cores of an AMD EPYC, Node 20
 * (bench/train/profile-step.ts; before -> after, for the layers 3 -> 16, 16 -> 32, 32 -> 64
 * channels). The machine was shared while measuring: ranges are over runs.
 *
 * Filter gradient, sparse (SIMD, from dy's nonzeros; dense SIMD kernel -> this, profile-step.ts
 * --ab-filter-grad, paths alternating in one process, medians of 8 rounds in each of two runs,
 * machine busy with other training (load 6-8 on 2 cores): 128 px 31-39 / 79-84 / 52-81 ->
 * 17-23 / 15-17 / 10-13 ms; the kernel alone on pool-like dy of 17.5 % nonzeros, medians of 7-9
 * calls, two runs: 30-42 / 55-74 / 64-79 -> 17-24 / 15-24 / 15-22 ms, on dense dy 52 / 89 / 104 ->
 * 72 / 78 / 94 ms; 64 px 8.9 / 17.8 / 20.1 -> 7.5 / 5.7 / 3.7 ms): as for the input
 * gradient, at most a quarter of dy is nonzero. Image by image, dy's nonzeros are listed per output
 * channel (value and the offset of the pixel's window), x's image is copied into a zero-padded NHWC
 * grid where each filter row of a window is a contiguous run of fw * c floats, and each channel's
 * list is walked once per tile of up to 12 f32x4 of its filter gradient, held in registers
 * (wasm-kernels/conv2d-backprop-filter.ts; any stride and padding, any channel counts). Its time is
 * ~2 cycles per dy value for the listing plus the nonzeros' multiply-adds, so the break-even density
 * depends on the layer (measured ~0.45 at 3 -> 16 channels, where the listing is half the time, ~1 at
 * 16 -> 32 and 32 -> 64); dy denser than 0.8 times an estimate of it (checked on the first image:
 * e.g. with batch norm) and x with non-finite values (0 * Infinity is NaN, which skipping zeros would
 * lose) take the dense kernel.
 *
 * Filter gradient, dense (SIMD; 125-145 / 124-152 / 126-133 -> 23-26 / 54-61 / 48-65 ms, about the
 * forward convolution's time for the same multiply-adds): with x zero-padded to the grid the
 * convolution reads,
 *
 *   dW[kh, kw, ci, o] = sum over (b, y, x) of xPad[b, y * sh + kh, x * sw + kw, ci] * dy[b, y, x, o]
 *
 * is the product [fh * fw * c, N] x [N, o] of the im2col matrix with dy (N = b * oh * ow), already
 * in the filter layout. The im2col matrix is never built: x is copied once into channel-major rows
 * of the padded grid, where each im2col row of an output row is a strided run; micro-kernels take 4
 * such rows x 8 output channels (two f32x4) per pixel, over chunks of ~2048 output pixels whose
 * data stays in the L2 cache (wasm-kernels/conv2d-backprop-filter.ts; any stride and padding, any
 * channel counts). Measured and dropped: the same product on XNNPACK (the wasm BatchMatMul, which
 * uses XNNPACK only for unbatched, untransposed operands) — XNNPACK packs its "weights" operand for
 * every new tensor at 10-13 ns per float and one operand is always as large as x or dy, so 60-80 ms
 * per layer. Fallback: the former formulation, a correlation of x with dy as an XNNPACK convolution
 * once batch and channels swap roles: x -> [c, H, W, b], dy -> [oh, ow, b, o] (an oh x ow filter,
 * b -> o channels), conv2d(stride 1, dilation = stride, padding = padding) -> slice ->
 * [fh, fw, c, o]. Its cost is packing dy as the filter (~70 ms at layer 1) and, at layers 2 and 3,
 * XNNPACK's slow path for an oh x ow kernel (~90 ms with the packing cached).
 *
 * Input gradient (SIMD, from dy's nonzeros; layers 2 and 3 — the first layer's is never needed —
 * 57-62 / 60-64 -> 16-19 / 9-11 ms, runs 48-87 / 48-71 -> 10-21 / 7-13 ms; at 64 px 14 / 14 ->
 * 3.9 / 2.9 ms): every convolution of the models is followed by relu and a 2x2 max pool, so at most
 * a quarter of its dy is nonzero (13-17 % in training), and a dense convolution multiplies mostly
 * zeros. Image by image, dy's nonzeros are listed per pixel (value and an offset into the filter,
 * packed rotated as [th, tw, o, c]), then each dx pixel is gathered over its valid filter taps, one
 * walk over the lists of the dy pixels of each tap row, up to 32 channels in f32x4 registers, stored
 * once (wasm-kernels/conv2d-backprop-input.ts; any stride and padding, any channel counts). Its time
 * follows the nonzeros: on dense dy it is 10-20 % slower than XNNPACK (81 vs 73 ms), at half density
 * 1.5-1.8x faster, so dy denser than 60 % (checked on the first image: e.g. with batch norm) and
 * filters with non-finite values (0 * Infinity is NaN, which skipping zeros would lose) take the
 * fallback. On dense dy both run at ~1.1-1.3 cycles per f32x4 multiply-add (2.45 GHz), so a dense
 * SIMD kernel was not written: it could at best match XNNPACK. Fallback (XNNPACK, the former
 * path): dy dilated by the stride (zeros between rows and columns, via reshape to
 * [b, oh, 1, ow, 1, o] + pad + reshape), padded by (f - 1 - pad), convolved with the filter
 * rotated 180 degrees and its in/out channels swapped ([fh, fw, o, c]); explicit paddings larger
 * than the filter go on to wasm's own kernel (8-15x slower).
 *
 * Max-pool gradient (SIMD; 62-88 / 40 / 15-18 -> 5 / 2.5 / 1.2 ms): each output gradient goes to the
 * first maximum of its window in row-major order, the cpu backend's rule (it matters for ties such
 * as relu zeros; NaN and -Infinity windows send nothing), for 4 channels at a time with f32x4
 * compare-and-select; 2x2 windows at stride 2 store each dx value once, other windows accumulate.
 * Channel counts that are not multiples of 4: a JavaScript loop over the heap (also the fallback).
 *
 * Bias gradient, Sum over all axes but the last (SIMD; 39-45 / 21 / 11-14 -> 3.4 / 1.6 / 0.7 ms): wasm's
 * Sum transposes dy to [c, b * h * w] before reducing innermost axes; here rows are added f32x4 at
 * a time in float32 blocks of 512 rows, the blocks' sums in float64 (as accurate as the cpu
 * backend's float64 sum). Other reductions: wasm's own Sum.
 *
 * Bias addition, Add of a [c] bias to a [..., c] activation (SIMD; 15 / 6 / 2.4 -> 4.4 / 2.0 /
 * 1.0 ms): the same float32 additions as wasm's broadcasting Add, so the results are identical.
 * Other additions: wasm's own Add.
 *
 * Identity (24 ms per step -> 0): tfjs-core's engine clones, with Identity, every tensor a gradient
 * will need; wasm's Identity copies the data, the cpu and webgl backends share it. It is shared
 * here too (tensor data is never written after creation; wasm's Reshape shares it already). Cast
 * to the tensor's own dtype likewise (6.7 ms per step -> 0: the relu gradient casts step(x),
 * already float32, to float32, and wasm's Cast always copies).
 *
 * Per step (median of 7 steps; four runs each, before and after interleaved): 128 px ~1000 ->
 * ~520 ms, ~31 -> ~61 images/s (runs: 940-1130 -> 480-550 ms); 64 px ~250 -> ~150 ms, ~128 ->
 * ~215 images/s (runs: 242-321 -> 139-168 ms). What remains is mostly convolution: at 128 px the
 * forward 150-170 ms, input gradient 120-130 ms, filter gradient 130-150 ms, each at 11-13 GMAC/s
 * (wasm SIMD has no fused multiply-add), and tfjs-backend-wasm runs on one thread under Node (it
 * disables its threaded build there), so the second core idles; then ~45 ms of wasm's element-wise
 * kernels (max-pool, relu and its gradient, casts).
 *
 * With the input gradient on dy's nonzeros and Cast shared (profile-step.ts --ab-input-grad, paths
 * alternating in one process, 8 rounds; machine busy with other training, so absolute times are
 * high): step 128 px 468-505 -> 408-422 ms (medians of two runs), 64 px 128 -> 110 ms. The
 * convolutions left: forward ~140 ms and filter gradient ~135 ms at 128 px (unloaded).
 *
 * With the filter gradient on dy's nonzeros too (--ab-filter-grad, 8 rounds, load 6-8): step 128 px
 * 475-638 -> 374-467 ms (medians of two runs; 100-170 ms less), 64 px 148 -> 120 ms. Per step at
 * 128 px the filter gradient is now ~40-50 ms under that load, the forward convolution the largest
 * cost left.
 *
 * Squeeze-and-excitation gate (se-cnn, the default model, and attention-cnn: per block conv -> relu
 * -> GAP -> dense -> dense sigmoid -> reshape [b, 1, 1, c] -> multiply -> max pool). Profile of a
 * se-cnn step before this (128 px, batch 32, load 1.5-4 on 2 cores): kernels 688 ms, step 839 ms;
 * besides the convolutions, Multiply 122 ms (the Mean gradient's dy [b, 1, 1, c] * ones(x.shape)
 * alone 55 ms at layer 1; x * gate and dy * gate 13 ms each), Sum 47 ms (the gate's gradient
 * sum(dy * x, [1, 2]): wasm transposes first), Mean 44 ms (also a transpose), and ~110 ms outside
 * the kernels in tf.ones, which tfjs-core's Mean gradient builds as a JavaScript array copied into
 * the heap (~60 ms at [32, 128, 128, 16]). Now (wasm-kernels/channel-gate.ts):
 * - Mean and Sum over the middle axes of a float32 [b, ..., c] tensor (c a multiple of 4; [1, 2] of
 *   NHWC) per image with `col_sum`, rows in float32 blocks of 512, blocks in float64 (as bias.ts);
 * - Multiply of a float32 [b, ..., c] tensor (c a multiple of 4) by a [b, 1, ..., 1, c] or
 *   [1, ..., 1, c] gate, either order, per image with `row_mul` (the same float32 products: exact);
 * - the Mean gradient registered for every backend but taking the fast route on wasm only: the same
 *   div(mul(reshaped dy, ones), size) as tfjs-core's, with ones from wasm's Fill kernel (1-3 ms).
 *   Other backends, and the fallbacks, call tfjs-core's gradient.
 * Per step, summed over the three blocks (profile-step.ts --ab-gate, the two paths alternating in
 * one process, medians of 6 rounds, load ~4): Multiply [32,1,1,16] x [32,128,128,16] 57 -> 4.8 ms,
 * [32,128,128,16] x [32,1,1,16] (2 calls) 26 -> 9.1, Sum [32,128,128,16] (2 calls, one the bias
 * gradient) 25 -> 6.8, Mean 22 / 12 / 6.5 -> 3.5 / 1.7 / 0.8, Sum [32,64,64,32] 15 -> 3.2; all
 * Mean, Sum, Multiply, RealDiv and Fill calls 218 -> 72 ms; step 721 -> 472 ms (medians of 12).
 * Other Multiply calls (same shapes: the relu gradient, dy * x; scalars) and channel counts that
 * are not multiples of 4: wasm's own kernels.
 * The gate also makes the convolutions' dy denser: relu only, the gradient through the average pool
 * being dense, so 0.50 at layer 1 and 0.45-0.58 at layers 2 and 3 instead of 13-17 %. The sparse
 * gradient kernels still win there (--ab-input-grad / --ab-filter-grad --max-density Infinity:
 * input gradient 72-76 -> 31-47 ms per call, filter gradient 64-66 -> 26-29 ms at layers 2-3), but
 * their thresholds (0.6 for the input gradient, 0.8 x the estimated break-even = 0.60 for the
 * filter gradient at layers 2-3) sent some calls to the dense paths; now 0.75 and the estimate
 * itself (0.75; 0.41 at layer 1, where the dense filter kernel is faster at 0.5). Measured with the
 * defaults, dense path -> default: input gradient 73 / 65 -> 59 / 26 ms, filter gradient
 * 63 / 72 -> 24 / 20 ms (layers 2 / 3). A se-cnn step (profile-step.ts --model se-cnn, separate
 * runs, load 1.5-4): kernels 688 -> 406 ms, step 839 -> 478 ms (38 -> 67 images/s on one thread);
 * small-cnn unchanged (~310 ms). What remains: the convolutions (forward ~140 ms, input and filter
 * gradients ~75 ms each) and ~60 ms of element-wise kernels (relu and its gradient, max pool,
 * same-shape Multiply and Add).
 *
 * Depthwise convolution gradients (MobileNetV2; wasm-kernels/depthwise-conv2d-backprop.ts): the
 * cpu backend's semantics (NHWC, filter [fh, fw, c, m], any stride, padding, dimRoundingMode and
 * channel multiplier; dilations, as there, shape the geometry only). Output rows and columns are
 * grouped into runs with the same valid filter taps (the interior, a few at each border, per
 * stride residue for dx), so there are no bounds checks per pixel and no padded copies; each run is
 * one call of a WebAssembly SIMD kernel assembled in that file (float32, multiplier 1, channels a
 * multiple of 4: MobileNetV2's layers), channels 4 at a time with the run's taps in f32x4
 * registers: filter gradient acc[tap] += x * dy (per-image float32 sums added in float64), input
 * gradient dx = sum of dy * W[tap] stored once (pixel by pixel for the 1-4 taps of a stride-2 dx
 * pixel, where writing dx in order is what costs). Everything else, and the fallback: the same runs
 * in JavaScript, channels innermost, float64 sums. Batch 16, 3x3, one thread, ms per call, forward
 * wasm DepthwiseConv2dNative (XNNPACK) / filter gradient / input gradient (JavaScript fallback),
 * medians of 31-41 calls in each of six runs, machine shared (load 2.5-3.5 on 2 cores):
 * [16, 14, 14, 384] stride 1 'same' 1.8-2.1 / 1.3-1.6 / 1.1-1.8 (fallback 27 / 24-30);
 * [16, 28, 28, 192] stride 2 'valid' 0.8-1.2 / 0.7-1.1 / 0.8-1.3 (fallback 14 / 14-21);
 * [16, 56, 56, 144] stride 1 'same' 11-13 / 11-12 / 7-9; [16, 112, 112, 96] stride 2 'same' 10-14 /
 * 9-11 / 7-10 (both gradients about at memory bandwidth, as the forward).
 *
 * ClipByValue gradient (MobileNetV2's ReLU6: tfjs-layers' ReLU layer with maxValue 6 is relu, then
 * clipByValue(0, 6); wasm-kernels/clip-gradient.ts). tfjs-core's gradient is
 * where(logicalAnd(greaterEqual(x, min), lessEqual(x, max)), dy, zerosLike(dy)): GreaterEqual,
 * LessEqual, LogicalAnd and Select, each ~10 ms on wasm for a [32, 14, 14, 384] activation (bool
 * tensors), 33-41 ms per call together, and ~40 % of a fine-tuning step from block_9_expand at
 * batch 32 (GreaterEqual 37 ms, LessEqual 39, LogicalAnd 38, Select 25 of a 269 ms step). The
 * gradient is now registered for every backend, taking on wasm (float32, fast paths on) one kernel,
 * `HistoFedClipByValueGrad`: dy where min <= x <= max (bounds as float32, as tfjs-core compares
 * them), else +0, in one pass of f32x4 compare-and-mask (the JavaScript loop over the heap where
 * WebAssembly SIMD is missing); the same values bit for bit, at the bounds, for NaN x (0) and for
 * non-finite dy. Other backends, other operands and the fallbacks call tfjs-core's gradient. At
 * [32, 14, 14, 384]: 33-41 -> 0.6-1.2 ms per call (JavaScript loop 5.7 ms); the clip gradients of a
 * step 139 -> 3.4 ms; step (.scratch/prof.ts, MobileNetV2 at 224 px from block_9_expand, batch 32,
 * medians of 5 steps, the two gradients alternating in one process, 4 rounds, load 5-6 on 2 cores)
 * 250-267 -> 131-144 ms. tfjs-core's Relu6 gradient (LessEqual, Step, Multiply, Cast) has the same
 * problem but nothing reaches it: tfjs-layers never calls tf.relu6 (its 'relu6' activation is
 * minimum(6, relu(x)), fused kernels take only relu, linear and elu) and neither do our models.
 *
 * MobileNetV2 fine-tuning, continued. After the ClipByValue gradient a step (blocks 9-10 from
 * block_9_expand, [32, 14, 14, 64] -> 384 channels, batch 32, one thread) took ~135 ms, ~115 ms of
 * it in kernels: the 1x1 expand/project convolutions (forward ~30 ms on XNNPACK, filter gradient
 * ~31, input gradient ~24; their dy is dense after the linear bottleneck, 23-42 % nonzero behind
 * ReLU6), FrozenBatchNorm's x * scale + shift and its gradient (Multiply ~16 ms, Add and Sum ~7:
 * six batch norms, each a broadcast product and sum forward and two products and two sums
 * backward), the depthwise convolution (forward ~7 ms on XNNPACK, gradients ~11), the Relu
 * gradient (Step and a Multiply, ~4 ms), ClipByValue and its gradient (~5 ms). Now:
 * - 1x1 convolutions (stride 1, no padding; wasm-kernels/pointwise-conv.ts): the forward
 *   (FusedConv2D without bias or activation; with them, and other filters, wasm's own) and both
 *   gradients as SIMD matrix products on one register-tiled micro-kernel (4 rows x 8 columns),
 *   reading x, dy and W in place through strides (no transposed copies: the dense filter-gradient
 *   kernel's pad_transpose of a 384-channel x alone took ~5 ms). dy sparser than
 *   POINTWISE_SPARSE_DENSITY (1/3) still takes the kernels on its nonzeros (measured break-even
 *   ~0.35 for 384 dy channels and 64 x channels). Per call at [32, 14, 14, 64] <-> [32, 14, 14, 384]
 *   (one thread, medians of 11-13, machine shared): forward 64 -> 384 7.3 -> 5.6 ms and
 *   384 -> 64 7.9 -> 6.3 ms against XNNPACK with a new filter each call (as in training: Adam
 *   writes new weights every step), also ~25 % faster on the frozen backbone's shapes (batch 8-32,
 *   112 px x 32 -> 16 channels to 7 px x 960 -> 320); filter gradient with dense dy 13.4 -> 6.7 ms
 *   (x 384 channels) and 7.4 -> 7.4 (x 64), at 42 % density 8.2 -> 7.3 (x 64); input gradient with
 *   dense dy 8.3 -> 5.7 (dx 384 channels) and 9.1 -> 6.3 ms (dx 64; XNNPACK with the rotated filter
 *   -> the product).
 * - FrozenBatchNorm (backbones/frozen-batch-norm.ts calls `channelScaleShift`): forward one pass
 *   (HistoFedScaleShift, the same float32 product and sum as Multiply then Add), backward one pass
 *   (HistoFedScaleShiftGrad: dx = dy * scale and the two per-channel sums, blocked as the SIMD Sum:
 *   bit for bit the values of the former composition; wasm-kernels/scale-shift.ts). ~0.5 + ~0.9 ms
 *   per 384-channel batch norm instead of ~4.4.
 * - The Relu gradient (every backend's gradient registered, the kernel on wasm only): dy * step(x)
 *   in one pass (HistoFedReluGrad; wasm-kernels/relu-gradient.ts), ~0.8 ms per call instead of
 *   Step + Multiply ~1.5-2.5.
 * - DepthwiseConv2dNative at stride 1 with centred padding: the input-gradient SIMD kernels with the
 *   filter rotated 180 degrees (the same correlation), ~40 % faster than XNNPACK ([32, 14, 14, 384]
 *   3x3: 4.2 -> 2.6 ms); strided layers stay on XNNPACK.
 * - The Mean gradient divides dy before broadcasting it (the same values; one [32, 14, 14, 384]
 *   RealDiv less, ~0.7 ms).
 * Step (.scratch/prof.ts's model and batch, the new paths and their predecessors alternating in one
 * process, medians of 24-30 steps, machine shared: load 6-12 on 2 cores): the 1x1 kernels
 * 130-164 -> 108-132 ms (two runs), then FrozenBatchNorm's and the Relu gradient's 112.5 -> 104.8,
 * all together 135.2 -> 108.1 ms (kernels 137.7 -> ~101.6 ms: FusedConv2D 30.0 -> 19.9,
 * Conv2DBackpropFilter 31.2 -> 18.5, Conv2DBackpropInput 23.6 -> 16.6, Multiply 16.0 -> 1.4, Add
 * and Sum 6.7 -> 0.7, Step 2.0 -> 0, against HistoFedScaleShift 2.0, HistoFedScaleShiftGrad 3.8,
 * HistoFedReluGrad 3.0), then the depthwise forward 106 -> 100 ms (DepthwiseConv2dNative 7.1 ->
 * 5.2). What remains at batch 32, ~92 ms of kernels: the 1x1 products ~53 ms (~27 GMAC/s, what
 * f32x4 multiply plus add allow: WebAssembly SIMD in Node 20 has no fused multiply-add; one of
 * them, block_9_expand's input gradient, ~4 ms, is computed by tfjs-core's fused-convolution
 * gradient and thrown away: the model's input needs none), the depthwise convolution and its
 * gradients ~16 ms, element-wise passes over [32, 14, 14, 384] ~17 ms (ReLU6 is tfjs-layers' relu,
 * then clipByValue: two passes each way).
 *
 * Every kernel frees its intermediates (`backend.disposeData`), so nothing leaks. The other
 * convolution gradients support NHWC, dilation 1 and float32 only; anything else throws a clear
 * error. `wasm-training-kernels.spec.ts` checks every kernel, on its fast path and on its fallback,
 * against the `cpu` backend on a grid of strides, padding modes, odd and even sizes, batch sizes,
 * filter sizes, channel counts and broadcast shapes (and a squeeze-and-excitation block's
 * gradients through tf.grads), and checks that nothing leaks; `depthwise-conv2d-backprop.spec.ts`
 * does the same for the depthwise gradients (and trains a depthwise model one step) and the
 * forward, `clip-gradient.spec.ts` for the ClipByValue gradient (exactly equal values, also through a
 * tfjs-layers ReLU(maxValue 6) model and a second-order gradient), `pointwise-conv.spec.ts` for the
 * 1x1 convolutions (forward and both gradients on every path: channel counts 1-384, odd pixel
 * counts, batch 1 and 3, sparse and dense dy, NaN and infinities in x, the filter and dy),
 * `scale-shift.spec.ts` and `relu-gradient.spec.ts` for FrozenBatchNorm's kernels and the Relu
 * gradient (the same values as the compositions they replace, second-order gradients).
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
 * tf.ones, which builds it as a JavaScript array and copies it into the wasm heap: ~60 ms for a
 * [32, 128, 128, 16] activation, once per squeeze-and-excitation gate per step, against ~4 ms for
 * wasm's Fill; and the division before the broadcast (on the reshaped dy, not on x's shape: 0.7 ms
 * less at [32, 14, 14, 384]). The same values: the same result. Other backends (and the
 * fallbacks) use tfjs-core's gradient unchanged.
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
 * each slow on wasm for its bool tensors (with tfjs-layers' ReLU(maxValue 6), Keras' ReLU6, 40 %
 * of a MobileNetV2 fine-tuning step) — as one CLIP_BY_VALUE_GRAD kernel on wasm (same values:
 * wasm-kernels/clip-gradient.ts), as that composition elsewhere and on the fallbacks.
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
