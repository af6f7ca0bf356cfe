import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { assertModelTrains } from '../kernel-check';
import { WASM_MISSING_TRAINING_KERNELS, registerWasmTrainingKernels, setWasmFastPathsEnabled } from '../wasm-training-kernels';
import {
  depthwiseConv2dNativeBackpropFilterWasm,
  depthwiseConv2dNativeBackpropInputWasm,
  depthwiseKernels,
} from './depthwise-conv2d-backprop';
import {
  type Gradients,
  expectClose,
  expectNoGrowth,
  expectWasmKernel,
  loadCpuAndWasm,
  runGradientKernels,
  setSeededWeights,
  testModes,
  values,
  wasmBackend,
} from './kernel-test-helpers';

/** 'fast': the SIMD kernels where they apply; 'fallback': the JavaScript loops (SIMD turned off). */
const { modes: MODES, on } = testModes({ fast: {}, fallback: { fastPaths: false } });
type Mode = (typeof MODES)[number];

type Pad = 'same' | 'valid' | number | [[0, 0], [number, number], [number, number], [0, 0]];

interface Case {
  batch: number;
  h: number;
  w: number;
  c: number;
  mult: number;
  f: number;
  /** [sh, sw] */
  stride: [number, number];
  pad: Pad;
  dilation?: number;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  /** an infinite x value and a NaN dy value (the cpu backend multiplies only valid taps) */
  nonFinite?: boolean;
  /** x and the filter as int32 (the JavaScript loops) */
  int32?: boolean;
}

/** Both kernels of one case, run through the engine on `backend`. */
function run(backend: string, c: Case, mode: Mode = 'fast'): Gradients {
  return on(backend, mode, () =>
    tf.tidy(() => {
      const xShape: [number, number, number, number] = [c.batch, c.h, c.w, c.c];
      const filterShape: [number, number, number, number] = [c.f, c.f, c.c, c.mult];
      const dilations: [number, number] = [c.dilation ?? 1, c.dilation ?? 1];
      const info = tf.backend_util.computeConv2DInfo(
        xShape,
        filterShape,
        c.stride,
        dilations,
        c.pad,
        c.dimRoundingMode,
        true,
      );
      const xv = values(tf.util.sizeFromShape(xShape), 7 + c.h + 3 * c.w);
      const dyv = values(tf.util.sizeFromShape(info.outShape), 13 + c.w);
      if (c.nonFinite) {
        xv[xv.length - 1] = Number.POSITIVE_INFINITY; // a corner: out of reach of some taps
        dyv[0] = Number.NaN;
      }
      const dtype = c.int32 ? 'int32' : 'float32';
      const ints = (a: Float32Array) => (c.int32 ? Int32Array.from(a, (v) => Math.round(10 * v)) : a);
      const x = tf.tensor4d(ints(xv), xShape, dtype);
      const dy = tf.tensor4d(dyv, info.outShape);
      const filter = tf.tensor4d(ints(values(tf.util.sizeFromShape(filterShape), 11 + c.f)), filterShape, dtype);
      const attrs = { strides: c.stride, pad: c.pad, dilations, dimRoundingMode: c.dimRoundingMode };
      return runGradientKernels([tf.DepthwiseConv2dNativeBackpropFilter, tf.DepthwiseConv2dNativeBackpropInput], x, dy, filter, attrs);
    }),
  );
}

const PADS: Pad[] = [
  'same',
  'valid',
  1,
  [
    [0, 0],
    [1, 2],
    [0, 1],
    [0, 0],
  ],
];

/**
 * The grid: strides 1 and 2, the four padding kinds, odd and even sizes (5, 6, 7, 14), filters 1, 3
 * and 5, channel multipliers 1 and 2, batch 1 and 3. Channels: 8 and 12 (multiples of 4: the SIMD
 * kernels at multiplier 1) and 3 (the JavaScript loops).
 */
const grid: Case[] = [];
const SIZES: [number, number][] = [
  [5, 6],
  [7, 7],
  [6, 5],
  [14, 14],
];
let n = 0;
for (const s of [1, 2]) {
  for (const pad of PADS) {
    for (const [h, w] of SIZES) {
      for (const f of [1, 3, 5]) {
        if (pad === 'valid' && (f > h || f > w)) continue;
        for (const mult of [1, 2]) {
          const batch = n % 2 === 0 ? 1 : 3;
          const c = [8, 3, 12][n % 3];
          n++;
          grid.push({ batch, h, w, c, mult, f, stride: [s, s], pad });
        }
      }
    }
  }
}

const extra: Case[] = [
  // stride 2 x 1, and 1 x 2
  { batch: 2, h: 7, w: 6, c: 8, mult: 1, f: 3, stride: [2, 1], pad: 'same' },
  { batch: 2, h: 7, w: 6, c: 4, mult: 2, f: 3, stride: [2, 1], pad: 'valid' },
  { batch: 1, h: 6, w: 9, c: 8, mult: 1, f: 3, stride: [1, 2], pad: 'same' },
  // stride 3, larger than the filter (dx pixels no tap reaches), and a 2x2 filter
  { batch: 2, h: 11, w: 10, c: 8, mult: 1, f: 2, stride: [3, 3], pad: 'valid' },
  { batch: 1, h: 10, w: 11, c: 4, mult: 1, f: 2, stride: [2, 2], pad: 'same' },
  // padding larger than the filter
  {
    batch: 2,
    h: 6,
    w: 7,
    c: 8,
    mult: 1,
    f: 3,
    stride: [2, 2],
    pad: [
      [0, 0],
      [4, 0],
      [0, 5],
      [0, 0],
    ],
  },
  // numeric padding with each rounding mode
  { batch: 2, h: 7, w: 8, c: 8, mult: 1, f: 3, stride: [2, 2], pad: 1, dimRoundingMode: 'floor' },
  { batch: 2, h: 7, w: 8, c: 8, mult: 1, f: 3, stride: [2, 2], pad: 1, dimRoundingMode: 'ceil' },
  { batch: 2, h: 7, w: 8, c: 3, mult: 2, f: 3, stride: [2, 2], pad: 2, dimRoundingMode: 'round' },
  // dilation 2 at stride 1 (dilations enter the geometry only, as in the cpu backend), and at stride 2
  { batch: 2, h: 9, w: 8, c: 8, mult: 1, f: 3, stride: [1, 1], pad: 'same', dilation: 2 },
  { batch: 2, h: 9, w: 8, c: 8, mult: 1, f: 3, stride: [1, 1], pad: 'valid', dilation: 2 },
  { batch: 1, h: 9, w: 8, c: 3, mult: 2, f: 3, stride: [1, 1], pad: 'same', dilation: 2 },
  { batch: 1, h: 9, w: 9, c: 8, mult: 1, f: 3, stride: [2, 2], pad: 'same', dilation: 2 },
  // 5x5 filters: 25 taps, more than one SIMD call's (dx accumulated over chunks)
  { batch: 2, h: 14, w: 14, c: 16, mult: 1, f: 5, stride: [1, 1], pad: 'same' },
  { batch: 1, h: 9, w: 13, c: 4, mult: 1, f: 7, stride: [1, 1], pad: 'same' },
  // MobileNetV2's layers in small: many channels, a run longer than one call (rows split)
  { batch: 2, h: 28, w: 28, c: 96, mult: 1, f: 3, stride: [2, 2], pad: 'same' },
  { batch: 2, h: 29, w: 29, c: 48, mult: 1, f: 3, stride: [2, 2], pad: 'valid' },
  { batch: 3, h: 14, w: 14, c: 64, mult: 1, f: 3, stride: [1, 1], pad: 'same' },
  { batch: 1, h: 40, w: 30, c: 4, mult: 1, f: 3, stride: [1, 1], pad: 'same' },
  // one channel; multiplier 3 and 4
  { batch: 2, h: 6, w: 6, c: 1, mult: 1, f: 3, stride: [1, 1], pad: 'same' },
  { batch: 2, h: 6, w: 7, c: 2, mult: 3, f: 3, stride: [2, 2], pad: 'same' },
  { batch: 1, h: 6, w: 7, c: 4, mult: 4, f: 3, stride: [1, 1], pad: 'valid' },
  // non-finite values: NaN and infinities exactly where the cpu backend has them
  { batch: 2, h: 7, w: 6, c: 8, mult: 1, f: 3, stride: [1, 1], pad: 'same', nonFinite: true },
  { batch: 2, h: 7, w: 6, c: 3, mult: 2, f: 3, stride: [2, 2], pad: 'valid', nonFinite: true },
  // int32 x and filter (float32 dy), as the cpu backend reads them
  { batch: 2, h: 7, w: 6, c: 8, mult: 1, f: 3, stride: [1, 1], pad: 'same', int32: true },
  // batch 0
  { batch: 0, h: 7, w: 6, c: 8, mult: 1, f: 3, stride: [2, 2], pad: 'same' },
  { batch: 0, h: 7, w: 6, c: 3, mult: 2, f: 3, stride: [1, 1], pad: 'same' },
];

describe('depthwise convolution gradients on wasm against the cpu backend', () => {
  beforeAll(loadCpuAndWasm);

  it('have the SIMD kernels available on this engine (else only the fallbacks would be tested)', () => {
    expect(depthwiseKernels(wasmBackend())).not.toBeNull();
  });

  it(`match the cpu backend on a grid of ${grid.length} cases (strides, paddings, sizes, filters, ...)`, () => {
    for (const c of grid) {
      const cpu = run('cpu', c);
      for (const mode of MODES) {
        const wasm = run('wasm', c, mode);
        const what = `${mode} ${JSON.stringify(c)}`;
        expect(`${what} ${wasm.filterShape}`).toBe(`${what} ${cpu.filterShape}`);
        expect(`${what} ${wasm.inputShape}`).toBe(`${what} ${cpu.inputShape}`);
        expectClose(wasm.filter, cpu.filter, `filter ${what}`);
        expectClose(wasm.input, cpu.input, `input ${what}`);
      }
    }
  });

  it.each(extra.map((c) => [JSON.stringify(c), c] as const))('match the cpu backend for %s', (_name, c) => {
    const cpu = run('cpu', c);
    if (c.nonFinite) expect(cpu.filter.some((v) => Number.isNaN(v))).toBe(true);
    for (const mode of MODES) {
      const wasm = run('wasm', c, mode);
      expect(wasm.filterShape).toEqual(cpu.filterShape);
      expect(wasm.inputShape).toEqual(cpu.inputShape);
      expectClose(wasm.filter, cpu.filter, `filter ${mode}`);
      expectClose(wasm.input, cpu.input, `input ${mode}`);
    }
  });

  /** Gradients of a small network with depthwise convolutions through tf.grads (tfjs-core's gradient). */
  function networkGradients(backend: string, mode: Mode, mult: number): Float32Array[] {
    return on(backend, mode, () =>
      tf.tidy(() => {
        const x = tf.tensor4d(values(2 * 11 * 10 * 8, 31), [2, 11, 10, 8]);
        const f1 = tf.tensor4d(values(3 * 3 * 8 * mult, 37), [3, 3, 8, mult]);
        const f2 = tf.tensor4d(values(3 * 3 * 8 * mult * 1, 41), [3, 3, 8 * mult, 1]);
        const g = tf.grads((xs: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => {
          const h = tf.relu(tf.depthwiseConv2d(xs as tf.Tensor4D, a as tf.Tensor4D, 1, 'same'));
          const padded = tf.pad(h, [
            [0, 0],
            [0, 1],
            [0, 1],
            [0, 0],
          ]);
          return tf.sum(tf.square(tf.depthwiseConv2d(padded, b as tf.Tensor4D, 2, 'valid')));
        })([x, f1, f2]);
        return g.map((t) => t.dataSync() as Float32Array);
      }),
    );
  }

  it.each([1, 2])('give the same gradients as cpu through tf.grads (multiplier %i)', (mult) => {
    const cpu = networkGradients('cpu', 'fast', mult);
    for (const mode of MODES) {
      const wasm = networkGradients('wasm', mode, mult);
      cpu.forEach((expected, i) => expectClose(wasm[i], expected, `${mode} gradient ${i}`));
    }
  });

  /** A small depthwise model, fixed initial weights, one SGD step on `backend`: the weights after it. */
  async function trainOneStep(backend: string, mode: Mode): Promise<Float32Array[]> {
    const prev = tf.getBackend();
    await tf.setBackend(backend);
    setWasmFastPathsEnabled(mode === 'fast');
    try {
      const model = tfl.sequential({
        layers: [
          tfl.layers.conv2d({ inputShape: [12, 12, 3], filters: 8, kernelSize: 1, name: 'expand' }),
          tfl.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', activation: 'relu', name: 'dw' }),
          tfl.layers.depthwiseConv2d({ kernelSize: 3, strides: 2, depthMultiplier: 2, name: 'dw2' }),
          tfl.layers.globalAveragePooling2d({}),
          tfl.layers.dense({ units: 2, activation: 'softmax', name: 'out' }),
        ],
      });
      setSeededWeights(model, 100);
      model.compile({ optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy' });
      const xs = tf.tensor4d(values(4 * 12 * 12 * 3, 5), [4, 12, 12, 3]);
      const ys = tf.oneHot(tf.tensor1d([0, 1, 1, 0], 'int32'), 2);
      await model.trainOnBatch(xs, ys);
      const weights = model.getWeights().map((w) => w.dataSync() as Float32Array);
      tf.dispose([xs, ys]);
      model.dispose();
      return weights;
    } finally {
      setWasmFastPathsEnabled(true);
      await tf.setBackend(prev);
    }
  }

  it('train a tfjs-layers depthwise model one step on wasm to the same weights as on cpu', async () => {
    const cpu = await trainOneStep('cpu', 'fast');
    for (const mode of MODES) {
      const wasm = await trainOneStep('wasm', mode);
      expect(wasm.length).toBe(cpu.length);
      cpu.forEach((expected, i) => expectClose(wasm[i], expected, `${mode} weight ${i}`));
    }
  });

  it('let assertModelTrains pass for a model with a depthwise convolution on wasm', () => {
    void tf.setBackend('wasm');
    const model = tfl.sequential({
      layers: [
        tfl.layers.depthwiseConv2d({ inputShape: [24, 24, 3], kernelSize: 3, name: 'dw' }),
        tfl.layers.conv2d({ filters: 8, kernelSize: 1 }),
        tfl.layers.depthwiseConv2d({ kernelSize: 3, strides: 2, padding: 'same' }),
        tfl.layers.globalAveragePooling2d({}),
        tfl.layers.dense({ units: 2, activation: 'softmax' }),
      ],
    });
    const tensors = tf.memory().numTensors;
    expect(() => assertModelTrains(model)).not.toThrow();
    expect(tf.memory().numTensors).toBe(tensors);
    model.dispose();
  });

  it('are registered for wasm by registerWasmTrainingKernels, idempotently', () => {
    const names = [tf.DepthwiseConv2dNativeBackpropFilter, tf.DepthwiseConv2dNativeBackpropInput];
    for (const name of names) {
      expectWasmKernel(name);
      expect(WASM_MISSING_TRAINING_KERNELS).toContain(name);
    }
    const before = names.map((name) => tf.getKernel(name, 'wasm'));
    registerWasmTrainingKernels();
    registerWasmTrainingKernels();
    names.forEach((name, i) => expect(tf.getKernel(name, 'wasm')).toBe(before[i]));
  });

  it('free every intermediate (no tensor, data buffer or wasm memory growth)', () => {
    const cases: Case[] = [
      { batch: 3, h: 9, w: 9, c: 8, mult: 1, f: 3, stride: [2, 2], pad: 'same' },
      { batch: 2, h: 14, w: 14, c: 16, mult: 1, f: 5, stride: [1, 1], pad: 'same' },
      { batch: 2, h: 7, w: 6, c: 3, mult: 2, f: 3, stride: [1, 1], pad: 'valid' },
    ];
    expectNoGrowth(() => {
      for (const mode of MODES) {
        for (const c of cases) run('wasm', c, mode);
        networkGradients('wasm', mode, 1);
        networkGradients('wasm', mode, 2);
      }
    }, 5);
  });

  it('reject mismatched shapes and unsupported dtypes with a clear message', () => {
    void tf.setBackend('wasm');
    const backend = tf.findBackend('wasm');
    const attrs = { strides: [1, 1], pad: 'same', dilations: [1, 1] };
    expect(() =>
      tf.tidy(() => {
        depthwiseConv2dNativeBackpropFilterWasm({
          inputs: { x: tf.zeros([1, 4, 4, 2]), dy: tf.zeros([1, 3, 4, 2]) },
          backend,
          attrs: { ...attrs, filterShape: [3, 3, 2, 1] } as unknown as tf.NamedAttrMap,
        });
      }),
    ).toThrow(/DepthwiseConv2dNativeBackpropFilter \(wasm, HistoFed\): dy shape \[1,3,4,2\] does not match/);
    expect(() =>
      tf.tidy(() => {
        depthwiseConv2dNativeBackpropInputWasm({
          inputs: { dy: tf.zeros([1, 4, 4, 2]), filter: tf.zeros([3, 3, 3, 1]) },
          backend,
          attrs: { ...attrs, inputShape: [1, 4, 4, 2] } as unknown as tf.NamedAttrMap,
        });
      }),
    ).toThrow(/filter shape \[3,3,3,1\] does not match the input's 2 channels/);
    expect(() =>
      tf.tidy(() => {
        depthwiseConv2dNativeBackpropInputWasm({
          inputs: { dy: tf.zeros([1, 4, 4, 2], 'bool'), filter: tf.zeros([3, 3, 2, 1]) },
          backend,
          attrs: { ...attrs, inputShape: [1, 4, 4, 2] } as unknown as tf.NamedAttrMap,
        });
      }),
    ).toThrow(/only float32 \(and int32\) tensors are supported, got bool/);
  });
});

/**
 * The forward depthwise convolution (DepthwiseConv2dNative) on wasm: 'fast' (stride 1 with centred
 * padding on the input-gradient kernels, the rest on XNNPACK), 'xnnpack' (that kernel off) and
 * 'fallback' (every fast path off).
 */
const { modes: FORWARD_MODES, on: onForward } = testModes({
  fast: {},
  xnnpack: { depthwiseForward: false },
  fallback: { fastPaths: false },
});
type ForwardMode = (typeof FORWARD_MODES)[number];

function forward(backend: string, c: Case, mode: ForwardMode, specialFilter = false): { shape: number[]; y: Float32Array } {
  return onForward(backend, mode, () =>
    tf.tidy(() => {
      const xShape: [number, number, number, number] = [c.batch, c.h, c.w, c.c];
      const filterShape: [number, number, number, number] = [c.f, c.f, c.c, c.mult];
      const xv = values(tf.util.sizeFromShape(xShape), 7 + c.h + 3 * c.w);
      const fv = values(tf.util.sizeFromShape(filterShape), 11 + c.f);
      if (c.nonFinite && xv.length > 0) {
        xv[xv.length - 1] = Number.POSITIVE_INFINITY;
        xv[0] = Number.NaN;
        xv[Math.floor(xv.length / 2)] = Number.NEGATIVE_INFINITY;
      }
      if (specialFilter) fv[fv.length - 1] = Number.POSITIVE_INFINITY;
      const y = tf.depthwiseConv2d(
        tf.tensor4d(xv, xShape),
        tf.tensor4d(fv, filterShape),
        c.stride,
        c.pad as 'same',
        'NHWC',
        (c.dilation ?? 1) as number,
        c.dimRoundingMode,
      );
      return { shape: y.shape, y: y.dataSync() as Float32Array };
    }),
  );
}

describe('the forward depthwise convolution on wasm against the cpu backend', () => {
  beforeAll(loadCpuAndWasm);

  // the gradients' grid and extra cases (float32; tfjs-core refuses dilations with strides > 1; the
  // dimRoundingMode cases are strided, so wasm's own kernel computes them, and it disagrees with the
  // cpu backend there at the last row: not HistoFed's to test),
  // plus non-finite values in stride-1 'same' layers and MobileNetV2's stride-1 layers in small
  const cases = [...grid, ...extra].filter(
    (c) => !c.int32 && c.dimRoundingMode === undefined && !((c.dilation ?? 1) > 1 && (c.stride[0] > 1 || c.stride[1] > 1)),
  );
  cases.push({ batch: 2, h: 7, w: 6, c: 12, mult: 1, f: 3, stride: [1, 1], pad: 'same', nonFinite: true });
  cases.push({ batch: 1, h: 5, w: 9, c: 4, mult: 1, f: 5, stride: [1, 1], pad: 'same', nonFinite: true });
  cases.push({ batch: 3, h: 14, w: 14, c: 96, mult: 1, f: 3, stride: [1, 1], pad: 'same' });
  cases.push({ batch: 1, h: 30, w: 31, c: 32, mult: 1, f: 3, stride: [1, 1], pad: 1 });
  cases.push({ batch: 2, h: 8, w: 8, c: 8, mult: 1, f: 3, stride: [1, 1], pad: [[0, 0], [1, 1], [1, 1], [0, 0]] });

  it('is registered for wasm', () => {
    expectWasmKernel(tf.DepthwiseConv2dNative);
  });

  it(`matches the cpu backend on ${cases.length} cases (strides, paddings, sizes, filters, NaN and infinities)`, () => {
    let centred = 0;
    for (const c of cases) {
      const cpu = forward('cpu', c, 'fast');
      if (c.stride[0] === 1 && c.stride[1] === 1 && c.mult === 1 && c.c % 4 === 0 && c.f % 2 === 1 && (c.pad === 'same' || c.pad === 1)) {
        centred++;
      }
      for (const mode of FORWARD_MODES) {
        const wasm = forward('wasm', c, mode);
        const what = `${mode} ${JSON.stringify(c)}`;
        expect(`${what} ${wasm.shape}`).toBe(`${what} ${cpu.shape}`);
        expectClose(wasm.y, cpu.y, `forward ${what}`);
      }
    }
    expect(centred).toBeGreaterThan(10); // cases the new kernel takes
  });

  it('skips the taps outside the image, as the cpu backend (an infinite filter value: no NaN from the padding)', () => {
    const c: Case = { batch: 2, h: 6, w: 7, c: 8, mult: 1, f: 3, stride: [1, 1], pad: 'same' };
    const cpu = forward('cpu', c, 'fast', true);
    expect(cpu.y.some((v) => !Number.isFinite(v))).toBe(true);
    expectClose(forward('wasm', c, 'fast', true).y, cpu.y, 'forward with an infinite filter value');
  });

  it('frees every intermediate (no tensor, data buffer or wasm memory growth)', () => {
    expectNoGrowth(() => {
      for (const mode of FORWARD_MODES) for (const c of cases.filter((_c, i) => i % 4 === 0)) forward('wasm', c, mode);
    }, 3);
  });
});
