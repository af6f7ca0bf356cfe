import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {
  expectAsOnCpu,
  expectClose,
  expectNoGrowth,
  expectWasmKernel,
  loadCpuAndWasm,
  lossAndGradients,
  runGradientKernels,
  setSeededWeights,
  testModes,
  values,
} from './kernel-test-helpers';
import { POINTWISE_SPARSE_DENSITY } from './pointwise-conv';

/**
 * 'fast': the defaults (1x1 gradients on the dense SIMD products, or on the kernels of dy's
 * nonzeros when dy is sparse); 'sparse': those kernels however dense dy is; 'dense': the products
 * however sparse dy is; 'off': the 1x1 kernels off (XNNPACK forward, the former gradient paths);
 * 'fallback': every fast path off.
 */
const { modes: MODES, on } = testModes({
  fast: {},
  sparse: { maxDensity: Infinity },
  dense: { maxDensity: 0 },
  off: { pointwise: false },
  fallback: { fastPaths: false },
});
type Mode = (typeof MODES)[number];

type Pad = 'same' | 'valid' | [[0, 0], [number, number], [number, number], [0, 0]];

interface Case {
  batch: number;
  h: number;
  w: number;
  inC: number;
  outC: number;
  pad?: Pad;
  stride?: number;
  /** Fraction of dy's values kept (the rest zero), default 1. */
  density?: number;
  /** Non-finite values in x, the filter or dy. */
  special?: 'x' | 'filter' | 'dy';
}

interface Results {
  y: Float32Array;
  dx: Float32Array;
  dw: Float32Array;
  shapes: number[][];
}

/** The forward (FusedConv2D, as tfjs-layers calls it) and both gradient kernels of a 1x1 convolution. */
function run(backend: string, c: Case, mode: Mode): Results {
  return on(backend, mode, () =>
    tf.tidy(() => {
      const stride = c.stride ?? 1;
      const pad = c.pad ?? 'same';
      const xv = values(c.batch * c.h * c.w * c.inC, 3 + c.h * c.inC);
      const fv = values(c.inC * c.outC, 5 + c.outC);
      if (c.special === 'x') {
        xv[0] = Number.NaN;
        xv[xv.length - 1] = Number.POSITIVE_INFINITY;
        xv[Math.floor(xv.length / 2)] = Number.NEGATIVE_INFINITY;
      }
      if (c.special === 'filter') {
        fv[fv.length - 1] = Number.POSITIVE_INFINITY;
        fv[0] = Number.NaN;
      }
      const x = tf.tensor4d(xv, [c.batch, c.h, c.w, c.inC]);
      const filter = tf.tensor4d(fv, [1, 1, c.inC, c.outC]);
      const y = tf.fused.conv2d({ x, filter, strides: stride, pad });
      const dyv = values(y.size, 7 + c.w);
      const keep = values(y.size, 11);
      const density = c.density ?? 1;
      for (let i = 0; i < dyv.length; i++) if ((keep[i] + 1) / 2 >= density) dyv[i] = 0;
      if (c.special === 'dy') {
        dyv[1] = Number.POSITIVE_INFINITY;
        dyv[dyv.length - 2] = Number.NaN;
      }
      const dy = tf.tensor4d(dyv, y.shape as [number, number, number, number]);
      const attrs = { strides: [stride, stride], pad, dataFormat: 'NHWC', dimRoundingMode: undefined };
      const g = runGradientKernels([tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput], x, dy, filter, attrs);
      return { y: y.dataSync() as Float32Array, dx: g.input, dw: g.filter, shapes: [y.shape, g.inputShape, g.filterShape] };
    }),
  );
}

const cases: Case[] = [];
// channel counts: 1 and 3 (scalar-width tails), 4, 5, 8 (one block), 12, 13 (8 + 4 + 1), 16, 20;
// pixel counts not multiples of the 4-row tiles; batch 1 and 3
for (const [inC, outC] of [
  [1, 1],
  [3, 5],
  [4, 8],
  [5, 12],
  [8, 13],
  [13, 4],
  [16, 20],
  [12, 3],
]) {
  for (const [batch, h, w] of [
    [1, 3, 5],
    [3, 4, 4],
    [1, 7, 9],
  ]) {
    cases.push({ batch, h, w, inC, outC });
  }
}
// 'valid' and explicit zero padding (the same 1x1 geometry), the models' shapes in small, dy sparse
// (behind ReLU6) and dense, more than one float32 block of the filter gradient (> 2048 pixels)
cases.push({ batch: 2, h: 5, w: 6, inC: 8, outC: 16, pad: 'valid' });
cases.push({ batch: 2, h: 5, w: 6, inC: 8, outC: 16, pad: [[0, 0], [0, 0], [0, 0], [0, 0]] });
cases.push({ batch: 3, h: 7, w: 7, inC: 64, outC: 384, density: 0.25 });
cases.push({ batch: 3, h: 7, w: 7, inC: 64, outC: 384, density: 0.5 });
cases.push({ batch: 1, h: 7, w: 7, inC: 384, outC: 64 });
cases.push({ batch: 3, h: 30, w: 31, inC: 9, outC: 8, density: 0.7 });
// non-finite values: propagate as in the cpu backend's dense loops
cases.push({ batch: 2, h: 4, w: 5, inC: 8, outC: 12, special: 'x' });
cases.push({ batch: 2, h: 4, w: 5, inC: 8, outC: 12, special: 'x', density: 0.2 });
cases.push({ batch: 2, h: 4, w: 5, inC: 7, outC: 5, special: 'filter' });
cases.push({ batch: 2, h: 4, w: 5, inC: 8, outC: 12, special: 'filter', density: 0.2 });
cases.push({ batch: 1, h: 3, w: 3, inC: 5, outC: 8, special: 'dy' });
// 1x1 filters these kernels do not take: stride 2, nonzero explicit padding
cases.push({ batch: 2, h: 7, w: 6, inC: 4, outC: 8, stride: 2 });
cases.push({ batch: 2, h: 5, w: 5, inC: 4, outC: 8, pad: [[0, 0], [1, 0], [0, 2], [0, 0]] });

describe('1x1 convolutions on wasm (pointwise-conv.ts) against the cpu backend', () => {
  beforeAll(loadCpuAndWasm);

  it('replace FusedConv2D on wasm, keeping the sparse gradients for sparse dy', () => {
    expectWasmKernel(tf.FusedConv2D);
    expect(POINTWISE_SPARSE_DENSITY).toBeGreaterThan(0);
    expect(POINTWISE_SPARSE_DENSITY).toBeLessThan(1);
  });

  it.each(cases.map((c) => [JSON.stringify(c), c] as const))('forward and both gradients match the cpu backend for %s', (_n, c) => {
    const cpu = run('cpu', c, 'fast');
    for (const mode of MODES) {
      const wasm = run('wasm', c, mode);
      expect(wasm.shapes).toEqual(cpu.shapes);
      expectClose(wasm.y, cpu.y, `y ${mode}`);
      expectClose(wasm.dw, cpu.dw, `dw ${mode}`);
      expectClose(wasm.dx, cpu.dx, `dx ${mode}`);
    }
  });

  it('gives a tfjs-layers 1x1 block (no bias, then with bias and relu) the same gradients as cpu', () => {
    const grads = (backend: string, mode: Mode) =>
      on(backend, mode, () => {
        const model = tfl.sequential();
        model.add(tfl.layers.conv2d({ inputShape: [5, 6, 8], filters: 12, kernelSize: 1, useBias: false }));
        model.add(tfl.layers.reLU({ maxValue: 6 }));
        model.add(tfl.layers.conv2d({ filters: 8, kernelSize: 1, activation: 'relu' }));
        model.add(tfl.layers.conv2d({ filters: 4, kernelSize: 1, useBias: false }));
        model.add(tfl.layers.globalAveragePooling2d({}));
        try {
          setSeededWeights(model, 13);
          return lossAndGradients(model, () => tf.tensor4d(values(3 * 5 * 6 * 8, 17), [3, 5, 6, 8]));
        } finally {
          model.dispose();
        }
      });
    expectAsOnCpu(MODES, grads);
  });

  it('frees every intermediate (no tensor, data buffer or wasm memory growth)', () => {
    expectNoGrowth(() => {
      for (const mode of MODES) for (const c of cases.filter((_c, i) => i % 3 === 0)) run('wasm', c, mode);
    }, 3);
  });
});
