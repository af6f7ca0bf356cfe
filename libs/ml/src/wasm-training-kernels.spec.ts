import * as tf from '@tensorflow/tfjs-core';
import { WASM_TRAINING_KERNELS, conv2DBackpropFilterWasm, conv2DBackpropInputWasm } from './wasm-training-kernels';
import {
  type Gradients,
  expectAsOnCpu,
  expectNoGrowth,
  isHistoFed,
  loadCpuAndWasm,
  maxRelativeError,
  runGradientKernels,
  testModes,
  values,
  wasmBackend,
} from './wasm-kernels/kernel-test-helpers';
import { simdKernels } from './wasm-kernels/simd-kernels';

/**
 * The wasm kernels run two ways: on their fast paths (HistoFed's SIMD kernels, shared Identity: the
 * normal case) and on their fallbacks (XNNPACK convolution, JavaScript loops, wasm's own Sum, Add
 * and Identity), used where the SIMD module is unavailable. Both are compared with the cpu backend.
 */
const MODES = ['fast', 'fallback'] as const;
/**
 * For the convolution gradients also 'forced': the fast paths with the kernels on dy's nonzeros
 * (Conv2DBackpropInput's nonzero gather, Conv2DBackpropFilter's sparse kernel) used however dense
 * dy is (by default dense dy goes to XNNPACK and the dense SIMD filter kernel); and 'dense': the
 * fast paths with those kernels off, however sparse dy is.
 */
const { modes: CONV_MODES, on } = testModes({
  fast: {},
  forced: { maxDensity: Infinity },
  dense: { maxDensity: 0 },
  fallback: { fastPaths: false },
});
type Mode = (typeof CONV_MODES)[number];

type Pad = 'same' | 'valid' | [[0, 0], [number, number], [number, number], [0, 0]];

interface Case {
  batch: number;
  h: number;
  w: number;
  inC: number;
  outC: number;
  f: number;
  stride: number;
  pad: Pad;
  /**
   * dy with about three zeros in four (as behind relu and a 2x2 max pool), so that the default fast
   * path takes the kernels on dy's nonzeros; 'inf': that, and an infinite filter value; 'xinf':
   * that, and infinite and NaN values of x.
   */
  sparse?: boolean | 'inf' | 'xinf';
}

/** Conv2DBackpropFilter and Conv2DBackpropInput of one case, run as kernels on `backend`. */
function gradients(backend: string, c: Case, mode: Mode = 'fast'): Gradients {
  return on(backend, mode, () =>
    tf.tidy(() => {
      const xv = values(c.batch * c.h * c.w * c.inC, 7 + c.h);
      if (c.sparse === 'xinf') {
        xv[xv.length - 1 - c.inC] = Number.POSITIVE_INFINITY; // in the last image
        if (c.batch === 1) xv[c.w * c.inC + 1] = Number.NaN; // else only a later image is not finite
      }
      const x = tf.tensor4d(xv, [c.batch, c.h, c.w, c.inC]);
      const fv = values(c.f * c.f * c.inC * c.outC, 11);
      const probe = tf.conv2d(tf.zerosLike(x), tf.tensor4d(fv, [c.f, c.f, c.inC, c.outC]), c.stride, c.pad); // dy's shape
      if (c.sparse === 'inf') fv[5 % fv.length] = Number.POSITIVE_INFINITY;
      const filter = tf.tensor4d(fv, [c.f, c.f, c.inC, c.outC]);
      const dyv = values(probe.size, 13 + c.w);
      if (c.sparse) {
        const keep = values(probe.size, 19);
        for (let i = 0; i < dyv.length; i++) if (keep[i] < 0.5) dyv[i] = 0;
      }
      const dy = tf.tensor4d(dyv, probe.shape as [number, number, number, number]);
      const attrs = { strides: [c.stride, c.stride], pad: c.pad, dataFormat: 'NHWC', dimRoundingMode: undefined };
      return runGradientKernels([tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput], x, dy, filter, attrs);
    }),
  );
}

/** Same values, NaN where the other has NaN (max-pool routing is exact). */
function expectSameValues(actual: Float32Array, expected: Float32Array, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (Number.isNaN(expected[i])) expect(actual[i]).toBeNaN();
  }
  const finite = (a: Float32Array) => a.map((v) => (Number.isFinite(v) ? v : 0));
  expect(maxRelativeError(finite(expected), finite(actual))).toBeLessThanOrEqual(tolerance);
}

const cases: Case[] = [];
for (const stride of [1, 2, 3]) {
  for (const pad of ['same', 'valid'] as const) {
    for (const [h, w] of [
      [7, 7],
      [8, 6],
      [9, 10],
    ]) {
      for (const batch of [1, 3]) {
        for (const inC of [1, 4]) {
          for (const f of [3, 2]) {
            // Output channel counts for the SIMD kernels' column blocks: 13 = 8 + 4 + 1, 5 = 4 + 1,
            // 8, and 2 (scalar only); filter taps x channels give 1, 2, 3 and 0 rows past a block of 4.
            const outC = inC === 1 ? (batch === 1 ? 13 : 5) : batch === 1 ? 8 : 2;
            cases.push({ batch, h, w, inC, outC, f, stride, pad });
          }
        }
      }
    }
  }
}
// explicit padding, a 1x1 filter, stride 3, 5x5 filters, stride 4
cases.push({ batch: 2, h: 9, w: 8, inC: 3, outC: 4, f: 3, stride: 2, pad: [[0, 0], [1, 2], [0, 1], [0, 0]] });
cases.push({ batch: 2, h: 9, w: 8, inC: 3, outC: 12, f: 3, stride: 1, pad: [[0, 0], [2, 0], [0, 2], [0, 0]] });
cases.push({ batch: 2, h: 6, w: 6, inC: 3, outC: 4, f: 1, stride: 1, pad: 'same' });
cases.push({ batch: 2, h: 11, w: 10, inC: 2, outC: 3, f: 3, stride: 3, pad: 'same' });
cases.push({ batch: 2, h: 11, w: 10, inC: 2, outC: 3, f: 3, stride: 3, pad: 'valid' });
cases.push({ batch: 1, h: 5, w: 6, inC: 2, outC: 3, f: 5, stride: 1, pad: 'valid' });
cases.push({ batch: 3, h: 9, w: 11, inC: 4, outC: 16, f: 5, stride: 1, pad: 'same' });
cases.push({ batch: 2, h: 10, w: 9, inC: 3, outC: 2, f: 3, stride: 4, pad: 'valid' });
// the models' layers in small: 3 -> 16 -> 32 channels, 'same' 3x3, several chunks of output rows
cases.push({ batch: 3, h: 40, w: 36, inC: 3, outC: 16, f: 3, stride: 1, pad: 'same' });
cases.push({ batch: 2, h: 20, w: 18, inC: 16, outC: 32, f: 3, stride: 1, pad: 'same' });
// padding larger than the filter: Conv2DBackpropInput's XNNPACK fallback passes it to wasm's own kernel
cases.push({ batch: 2, h: 6, w: 7, inC: 2, outC: 3, f: 3, stride: 1, pad: [[0, 0], [3, 1], [1, 4], [0, 0]] });
cases.push({ batch: 2, h: 6, w: 7, inC: 2, outC: 3, f: 3, stride: 2, pad: [[0, 0], [4, 0], [0, 5], [0, 0]] });
// dy mostly zeros (relu + max pool): the input gradient's nonzero-gather kernel on the default fast
// path; dx channel blocks of up to 32 (6 = 4 + 2 lanes, 35 = 32 + 3, 40 = 32 + 8), strides 1 and 2
for (const [inC, stride, pad] of [
  [16, 1, 'same'],
  [6, 2, 'same'],
  [35, 1, 'valid'],
  [40, 2, 'valid'],
  [3, 1, 'same'],
] as const) {
  cases.push({ batch: 2, h: 9, w: 8, inC, outC: 5, f: 3, stride, pad, sparse: true });
}
cases.push({ batch: 3, h: 16, w: 16, inC: 16, outC: 32, f: 3, stride: 1, pad: 'same', sparse: true });
// Conv2DBackpropFilter's sparse kernel: filter rows of fw * c floats as tiles of up to 12 f32x4
// (3 x 3 = 9 floats: 3 rows of 3; 3 x 32 = 96 floats: 2 tiles of 12 per row; 5 x 7 = 35: 9 f32x4 and a
// partial one), odd and even sizes and filters, strides 1 and 2, batch 1 and more
for (const [batch, h, w, inC, outC, f, stride, pad] of [
  [1, 7, 9, 3, 16, 3, 1, 'same'],
  [2, 10, 8, 3, 7, 3, 2, 'same'],
  [1, 9, 9, 32, 12, 3, 1, 'valid'],
  [3, 8, 11, 32, 64, 3, 2, 'valid'],
  [1, 12, 10, 16, 4, 2, 1, 'same'],
  [2, 11, 7, 7, 9, 5, 1, 'same'],
  [1, 6, 6, 1, 1, 3, 2, 'valid'],
  [2, 13, 12, 64, 8, 3, 1, 'same'],
] as const) {
  cases.push({ batch, h, w, inC, outC, f, stride, pad, sparse: true });
}
// non-finite x: Conv2DBackpropFilter may not skip dy's zeros (dense kernel)
cases.push({ batch: 2, h: 7, w: 8, inC: 4, outC: 6, f: 3, stride: 1, pad: 'same', sparse: 'xinf' });
cases.push({ batch: 1, h: 7, w: 8, inC: 3, outC: 5, f: 3, stride: 2, pad: 'valid', sparse: 'xinf' });
// a non-finite filter value: 0 * Infinity is NaN, so zeros may not be skipped (XNNPACK fallback)
cases.push({ batch: 2, h: 6, w: 6, inC: 4, outC: 4, f: 3, stride: 1, pad: 'same', sparse: 'inf' });

describe('wasm training kernels against the cpu backend', () => {
  beforeAll(loadCpuAndWasm);

  it('have the SIMD kernels available on this engine (else only the fallbacks would be tested)', () => {
    expect(simdKernels(wasmBackend())).not.toBeNull();
  });

  it.each(cases.map((c) => [JSON.stringify(c), c] as const))(
    'Conv2DBackpropFilter and Conv2DBackpropInput match the cpu backend for %s',
    (_name, c) => {
      const cpu = gradients('cpu', c);
      for (const mode of CONV_MODES) {
        const wasm = gradients('wasm', c, mode);
        expect(wasm.filterShape).toEqual(cpu.filterShape);
        expect(wasm.inputShape).toEqual(cpu.inputShape);
        if (c.sparse === 'xinf') {
          // 0 * Infinity and NaN: NaN exactly where the cpu backend has it, as the dense kernel
          expect(cpu.filter.some((v) => Number.isNaN(v))).toBe(true);
          expect(wasm.filter.map((v) => (Number.isNaN(v) ? 1 : 0))).toEqual(cpu.filter.map((v) => (Number.isNaN(v) ? 1 : 0)));
          const finite = (a: Float32Array) => a.map((v) => (Number.isFinite(v) ? v : 0));
          expect(maxRelativeError(finite(cpu.filter), finite(wasm.filter))).toBeLessThan(1e-4);
        } else {
          expect(maxRelativeError(cpu.filter, wasm.filter)).toBeLessThan(1e-4);
        }
        if (c.sparse === 'inf') {
          // NaN wherever the cpu backend has NaN (0 * Infinity; XNNPACK has more: it also multiplies
          // its zero padding at the borders)
          expect(cpu.input.some((v) => Number.isNaN(v))).toBe(true);
          expect(cpu.input.every((v, i) => !Number.isNaN(v) || Number.isNaN(wasm.input[i]))).toBe(true);
          continue;
        }
        expect(maxRelativeError(cpu.input, wasm.input)).toBeLessThan(1e-4);
      }
    },
  );

  it('are the registered wasm kernels', () => {
    for (const name of WASM_TRAINING_KERNELS) expect(isHistoFed(tf.getKernel(name, 'wasm')?.kernelFunc)).toBe(true);
    expect(WASM_TRAINING_KERNELS).toEqual([
      'Conv2DBackpropFilter',
      'Conv2DBackpropInput',
      'MaxPoolGrad',
      'Sum',
      'Add',
      'Identity',
      'Cast',
      'Mean',
      'Multiply',
      'DepthwiseConv2dNativeBackpropFilter',
      'DepthwiseConv2dNativeBackpropInput',
      'HistoFedClipByValueGrad',
      'FusedConv2D',
      'DepthwiseConv2dNative',
      'HistoFedScaleShift',
      'HistoFedScaleShiftGrad',
      'HistoFedReluGrad',
    ]);
  });

  interface PoolCase {
    batch: number;
    h: number;
    w: number;
    c: number;
    f: number;
    stride: number;
    pad: 'same' | 'valid';
    x: 'random' | 'ties' | 'special';
  }
  const poolCases: PoolCase[] = [];
  for (const [f, stride] of [
    [2, 2],
    [3, 2],
    [3, 1],
    [2, 1],
  ]) {
    for (const pad of ['same', 'valid'] as const) {
      for (const [h, w] of [
        [8, 8],
        [7, 9],
      ]) {
        // 3 channels: the JavaScript loop; 4 and 8: the SIMD kernels
        for (const c of [3, 4, 8]) {
          for (const x of ['random', 'ties'] as const) poolCases.push({ batch: 2, h, w, c, f, stride, pad, x });
        }
      }
    }
  }
  // NaN, -Infinity and Infinity in windows
  for (const c of [3, 4]) {
    poolCases.push({ batch: 2, h: 8, w: 8, c, f: 2, stride: 2, pad: 'valid', x: 'special' });
    poolCases.push({ batch: 2, h: 7, w: 9, c, f: 3, stride: 2, pad: 'same', x: 'special' });
  }

  function poolInput(c: PoolCase): Float32Array {
    const xv = values(c.batch * c.h * c.w * c.c, 5 + c.h + c.c);
    // small integers: many ties within a window, as after a relu
    if (c.x === 'ties') return xv.map((v) => Math.max(0, Math.round(v * 2)));
    if (c.x === 'special') {
      const special = [NaN, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY];
      return xv.map((v, i) => (i % 7 === 0 ? special[i % 3] : i % 11 === 0 ? NaN : v));
    }
    return xv;
  }

  it.each(poolCases.map((c) => [JSON.stringify(c), c] as const))('MaxPoolGrad matches the cpu backend for %s', (_n, c) => {
    const run = (backend: string, mode: Mode) =>
      on(backend, mode, () =>
        tf.tidy(() => {
          const x = tf.tensor4d(poolInput(c), [c.batch, c.h, c.w, c.c]);
          const y = tf.maxPool(x, c.f, c.stride, c.pad);
          const dy = tf.tensor4d(values(y.size, 17), y.shape as [number, number, number, number]);
          const dx = tf.engine().runKernel(tf.MaxPoolGrad, { dy, input: x, output: y }, {
            filterSize: c.f,
            strides: c.stride,
            pad: c.pad,
          } as unknown as tf.NamedAttrMap) as tf.Tensor;
          return dx.dataSync() as Float32Array;
        }),
      );
    const cpu = run('cpu', 'fast');
    for (const mode of MODES) expectSameValues(run('wasm', mode), cpu, 1e-6);
  });

  const sumCases: { shape: number[]; axis: number | number[]; keepDims: boolean; dtype?: 'int32' }[] = [
    { shape: [3, 9, 7, 16], axis: [0, 1, 2], keepDims: false }, // a bias gradient (1512 rows: several blocks)
    { shape: [2, 5, 6, 4], axis: [2, 0, 1], keepDims: true }, // unordered axes, kept dims
    { shape: [2, 5, 6, 12], axis: [-2, -3, -4], keepDims: false }, // negative axes
    { shape: [7, 8], axis: 0, keepDims: false }, // a dense layer's bias gradient
    { shape: [7, 8], axis: [0], keepDims: true },
    { shape: [1, 1, 1, 4], axis: [0, 1, 2], keepDims: false },
    // handled by wasm's own Sum
    { shape: [2, 5, 6, 3], axis: [0, 1, 2], keepDims: false }, // channels not a multiple of 4
    // the spatial axes of NHWC (a squeeze-and-excitation gate's gradient)
    { shape: [2, 5, 6, 8], axis: [1, 2], keepDims: false },
    { shape: [3, 37, 29, 4], axis: [2, 1], keepDims: true }, // 1073 rows per image: several blocks
    { shape: [1, 7, 9, 12], axis: [-3, -2], keepDims: false },
    { shape: [2, 1, 1, 4], axis: [1, 2], keepDims: false },
    { shape: [3, 5, 16], axis: 1, keepDims: false }, // rank 3
    { shape: [2, 3, 4, 5, 8], axis: [1, 2, 3], keepDims: true }, // rank 5
    // handled by wasm's own Sum
    { shape: [2, 5, 6, 7], axis: [1, 2], keepDims: false }, // channels not a multiple of 4
    { shape: [2, 5, 6, 8], axis: [1], keepDims: false },
    { shape: [2, 5, 6, 8], axis: [2, 3], keepDims: false },
    { shape: [2, 5, 6, 8], axis: -1, keepDims: true },
    { shape: [2, 5, 6, 8], axis: [0, 1, 2, 3], keepDims: false },
    { shape: [8], axis: 0, keepDims: false },
    { shape: [3, 4, 8], axis: [0, 1], keepDims: false, dtype: 'int32' },
    { shape: [3, 4, 5, 8], axis: [1, 2], keepDims: false, dtype: 'int32' },
  ];

  it.each(sumCases.map((c) => [JSON.stringify(c), c] as const))('Sum matches the cpu backend for %s', (_n, c) => {
    const run = (backend: string, mode: Mode) =>
      on(backend, mode, () =>
        tf.tidy(() => {
          const v = values(tf.util.sizeFromShape(c.shape), 23).map((x) => (c.dtype === 'int32' ? Math.round(x * 100) : x * 1000));
          const x = tf.tensor(v, c.shape, c.dtype ?? 'float32');
          const s = tf.sum(x, c.axis, c.keepDims);
          return { shape: s.shape, dtype: s.dtype, values: Float32Array.from(s.dataSync()) };
        }),
      );
    const cpu = run('cpu', 'fast');
    for (const mode of MODES) {
      const wasm = run('wasm', mode);
      expect(wasm.shape).toEqual(cpu.shape);
      expect(wasm.dtype).toEqual(cpu.dtype);
      expect(maxRelativeError(cpu.values, wasm.values)).toBeLessThan(1e-6);
    }
  });

  const addCases: { a: number[]; b: number[]; dtype?: 'int32' }[] = [
    { a: [3, 9, 7, 16], b: [16] }, // a convolution's bias
    { a: [8], b: [2, 5, 6, 8] }, // bias first
    { a: [7, 12], b: [12] }, // a dense layer's bias
    { a: [2, 5, 6, 4], b: [1, 1, 1, 4] },
    { a: [2, 5, 6, 4], b: [1, 4] },
    // handled by wasm's own Add
    { a: [2, 5, 6, 3], b: [3] }, // channels not a multiple of 4
    { a: [2, 5, 6, 4], b: [2, 5, 6, 4] },
    { a: [2, 5, 6, 4], b: [] },
    { a: [2, 5, 6, 4], b: [6, 4] },
    { a: [4], b: [4] },
    { a: [3, 8], b: [8], dtype: 'int32' },
  ];

  it.each(addCases.map((c) => [JSON.stringify(c), c] as const))('Add matches the cpu backend for %s', (_n, c) => {
    const run = (backend: string, mode: Mode) =>
      on(backend, mode, () =>
        tf.tidy(() => {
          const make = (shape: number[], seed: number) => {
            const v = values(Math.max(1, tf.util.sizeFromShape(shape)), seed);
            return tf.tensor(c.dtype === 'int32' ? v.map((x) => Math.round(x * 100)) : v, shape, c.dtype ?? 'float32');
          };
          const s = tf.add(make(c.a, 29), make(c.b, 31));
          return { shape: s.shape, dtype: s.dtype, values: Float32Array.from(s.dataSync()) };
        }),
      );
    const cpu = run('cpu', 'fast');
    for (const mode of MODES) {
      const wasm = run('wasm', mode);
      expect(wasm.shape).toEqual(cpu.shape);
      expect(wasm.dtype).toEqual(cpu.dtype);
      expect(wasm.values).toEqual(cpu.values); // the same float32 additions: exact
    }
  });

  const meanCases: { shape: number[]; axis: number | number[]; keepDims: boolean }[] = [
    { shape: [3, 9, 7, 16], axis: [1, 2], keepDims: false }, // global average pooling
    { shape: [1, 37, 29, 4], axis: [2, 1], keepDims: true }, // several blocks, batch 1
    { shape: [2, 5, 6, 12], axis: [-3, -2], keepDims: false },
    { shape: [4, 3, 8], axis: 1, keepDims: true }, // rank 3
    // handled by wasm's own Mean
    { shape: [2, 5, 6, 7], axis: [1, 2], keepDims: false }, // channels not a multiple of 4
    { shape: [2, 5, 6, 8], axis: [0, 1, 2], keepDims: false },
    { shape: [2, 5, 6, 8], axis: -1, keepDims: true },
    { shape: [2, 5, 6, 8], axis: [1], keepDims: false },
  ];

  it.each(meanCases.map((c) => [JSON.stringify(c), c] as const))('Mean matches the cpu backend for %s', (_n, c) => {
    const run = (backend: string, mode: Mode) =>
      on(backend, mode, () =>
        tf.tidy(() => {
          const x = tf.tensor(values(tf.util.sizeFromShape(c.shape), 43).map((v) => v * 1000 + 3), c.shape);
          const s = tf.mean(x, c.axis, c.keepDims);
          return { shape: s.shape, dtype: s.dtype, values: Float32Array.from(s.dataSync()) };
        }),
      );
    const cpu = run('cpu', 'fast');
    for (const mode of MODES) {
      const wasm = run('wasm', mode);
      expect(wasm.shape).toEqual(cpu.shape);
      expect(wasm.dtype).toEqual(cpu.dtype);
      expect(maxRelativeError(cpu.values, wasm.values)).toBeLessThan(1e-4);
    }
  });

  const multiplyCases: { a: number[]; b: number[]; dtype?: 'int32'; special?: boolean }[] = [
    { a: [3, 9, 7, 16], b: [3, 1, 1, 16] }, // a squeeze-and-excitation gate
    { a: [3, 1, 1, 16], b: [3, 9, 7, 16] }, // gate first (the Mean gradient: dy * ones)
    { a: [1, 8, 5, 4], b: [1, 1, 1, 4] }, // batch 1
    { a: [2, 5, 6, 12], b: [1, 1, 1, 12] }, // one gate for every image
    { a: [2, 5, 6, 8], b: [2, 1, 1, 8], special: true }, // NaN and infinities: as wasm's products
    { a: [3, 7, 8], b: [3, 1, 8] }, // rank 3
    { a: [2, 1, 6, 8], b: [2, 1, 1, 8] },
    // handled by wasm's own Multiply
    { a: [2, 5, 6, 7], b: [2, 1, 1, 7] }, // channels not a multiple of 4
    { a: [2, 5, 6, 8], b: [2, 5, 6, 8] },
    { a: [2, 1, 1, 8], b: [2, 1, 1, 8] },
    { a: [1, 1, 1, 8], b: [3, 1, 1, 8] },
    { a: [1, 5, 6, 8], b: [3, 1, 1, 8] }, // both broadcast
    { a: [2, 5, 6, 8], b: [2, 1, 6, 8] },
    { a: [2, 5, 6, 8], b: [8] },
    { a: [2, 5, 6, 8], b: [] },
    { a: [2, 5, 6, 8], b: [2, 1, 1, 8], dtype: 'int32' },
  ];

  it.each(multiplyCases.map((c) => [JSON.stringify(c), c] as const))('Multiply matches the cpu backend for %s', (_n, c) => {
    const run = (backend: string, mode: Mode) =>
      on(backend, mode, () =>
        tf.tidy(() => {
          const make = (shape: number[], seed: number) => {
            let v = values(Math.max(1, tf.util.sizeFromShape(shape)), seed);
            if (c.special) v = v.map((x, i) => (i % 13 === 0 ? [NaN, Infinity, -Infinity][i % 3] : x));
            return tf.tensor(c.dtype === 'int32' ? v.map((x) => Math.round(x * 100)) : v, shape, c.dtype ?? 'float32');
          };
          const s = tf.mul(make(c.a, 47), make(c.b, 53));
          return { shape: s.shape, dtype: s.dtype, values: Float32Array.from(s.dataSync()) };
        }),
      );
    const cpu = run('cpu', 'fast');
    for (const mode of MODES) {
      const wasm = run('wasm', mode);
      expect(wasm.shape).toEqual(cpu.shape);
      expect(wasm.dtype).toEqual(cpu.dtype);
      expect(wasm.values).toEqual(cpu.values); // the same float32 products: exact (NaN where cpu has it)
    }
  });

  it('Identity (tf.clone) shares the data on the fast path and copies it on the fallback', () => {
    for (const mode of MODES) {
      on('wasm', mode, () => {
        const x = tf.tensor2d(values(24, 37), [4, 6]);
        const buffers = tf.memory().numDataBuffers;
        const y = tf.clone(x);
        expect(tf.memory().numDataBuffers).toBe(mode === 'fast' ? buffers : buffers + 1);
        x.dispose();
        expect(Array.from(y.dataSync())).toEqual(Array.from(values(24, 37)));
        expect(y.shape).toEqual([4, 6]);
        const z = tf.clone(tf.tensor1d(['a', 'b'], 'string'));
        expect(z.dataSync()).toEqual(['a', 'b']);
        y.dispose();
        z.dispose();
      });
    }
  });

  it('Cast to the same dtype shares the data on the fast path; other casts convert as on cpu', () => {
    for (const mode of MODES) {
      on('wasm', mode, () => {
        const x = tf.tensor2d(values(24, 41), [4, 6]);
        const buffers = tf.memory().numDataBuffers;
        const y = tf.cast(x, 'float32');
        expect(tf.memory().numDataBuffers).toBe(mode === 'fast' ? buffers : buffers + 1);
        x.dispose();
        expect(Array.from(y.dataSync())).toEqual(Array.from(values(24, 41)));
        const i = tf.cast(tf.mul(y, 10), 'int32');
        expect(i.dtype).toBe('int32');
        const expected = on('cpu', 'fast', () =>
          tf.tidy(() => tf.cast(tf.mul(tf.tensor2d(values(24, 41), [4, 6]), 10), 'int32').dataSync()),
        );
        expect(Array.from(i.dataSync())).toEqual(Array.from(expected));
        tf.dispose([y, i]);
      });
    }
  });

  /** A small network's gradients through tf.grads: conv + bias + relu + max-pool + conv. */
  function networkGradients(backend: string, mode: Mode): Float32Array[] {
    return on(backend, mode, () =>
      tf.tidy(() => {
        const x = tf.tensor4d(values(2 * 9 * 9 * 3, 3), [2, 9, 9, 3]);
        const filter = tf.tensor4d(values(3 * 3 * 3 * 8, 5), [3, 3, 3, 8]);
        const bias = tf.tensor1d(values(8, 9));
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => {
          const h = tf.relu(tf.add(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same'), c)) as tf.Tensor4D;
          const p = tf.maxPool(h, 2, 2, 'valid');
          return tf.sum(tf.square(tf.conv2d(p, tf.ones([3, 3, 8, 4]), 2, 'same')));
        })([x, filter, bias]);
        return g.map((t) => t.dataSync() as Float32Array);
      }),
    );
  }

  it('gives the same gradients as cpu through tf.grads (the path training uses)', () => {
    expectAsOnCpu(MODES, networkGradients);
  });

  /**
   * A squeeze-and-excitation block's gradients through tf.grads: centring, conv + bias + relu,
   * gate = sigmoid(dense(relu(dense(mean over [1, 2])))) reshaped to [b, 1, 1, c], x * gate,
   * max-pool (se-cnn's block; its backward pass has Sum over [1, 2] and the Mean gradient).
   */
  function seGradients(backend: string, mode: Mode, batch: number, c: number): Float32Array[] {
    return on(backend, mode, () =>
      tf.tidy(() => {
        const x = tf.tensor4d(values(batch * 10 * 9 * 3, 61), [batch, 10, 9, 3]);
        const filter = tf.tensor4d(values(3 * 3 * 3 * c, 67), [3, 3, 3, c]);
        const bias = tf.tensor1d(values(c, 71));
        const w1 = tf.tensor2d(values(c * 2, 73), [c, 2]);
        const w2 = tf.tensor2d(values(2 * c, 79), [2, c]);
        const g = tf.grads((xs: tf.Tensor, f: tf.Tensor, b: tf.Tensor, u: tf.Tensor, v: tf.Tensor) => {
          const centred = tf.sub(tf.mul(xs, 2), 1) as tf.Tensor4D;
          const h = tf.relu(tf.add(tf.conv2d(centred, f as tf.Tensor4D, 1, 'same'), b)) as tf.Tensor4D;
          const squeeze = tf.mean(h, [1, 2]) as tf.Tensor2D;
          const gate = tf.sigmoid(tf.matMul(tf.relu(tf.matMul(squeeze, u as tf.Tensor2D)), v as tf.Tensor2D));
          const y = tf.mul(h, tf.reshape(gate, [batch, 1, 1, c])) as tf.Tensor4D;
          return tf.sum(tf.square(tf.maxPool(y, 2, 2, 'valid')));
        })([x, filter, bias, w1, w2]);
        return g.map((t) => t.dataSync() as Float32Array);
      }),
    );
  }

  it.each([
    [1, 8],
    [3, 16],
    [2, 6], // channels not a multiple of 4: wasm's own Mean, Sum and Multiply
  ])('gives the same squeeze-and-excitation gradients as cpu (batch %i, %i channels)', (batch, c) => {
    expectAsOnCpu(MODES, (backend, mode) => seGradients(backend, mode, batch, c));
  });

  it('frees every intermediate (no tensor, data buffer or wasm memory growth)', () => {
    const c: Case = { batch: 3, h: 9, w: 9, inC: 4, outC: 13, f: 3, stride: 2, pad: 'same' };
    const all = () => {
      for (const mode of CONV_MODES) {
        gradients('wasm', c, mode);
        gradients('wasm', { ...c, stride: 1 }, mode);
        gradients('wasm', { ...c, sparse: true }, mode);
        gradients('wasm', { ...c, sparse: 'inf' }, mode);
        gradients('wasm', { ...c, sparse: 'xinf' }, mode);
        networkGradients('wasm', mode);
        seGradients('wasm', mode, 2, 8);
        on('wasm', mode, () =>
          tf.tidy(() => {
            const x = tf.tensor4d(values(2 * 7 * 7 * 4, 1), [2, 7, 7, 4]);
            tf.grad((t: tf.Tensor) => tf.sum(tf.maxPool(t as tf.Tensor4D, 3, 2, 'same')))(x).dataSync();
            tf.grad((t: tf.Tensor) => tf.sum(tf.maxPool(t as tf.Tensor4D, 2, 2, 'valid')))(x).dataSync();
            tf.sum(x, [0, 1, 2]).dataSync();
            tf.sum(x, [1, 2]).dataSync();
            tf.mean(x, [1, 2]).dataSync();
            tf.mul(x, tf.ones([2, 1, 1, 4])).dataSync();
            tf.mul(tf.ones([2, 1, 1, 4]), x).dataSync();
            tf.add(x, tf.ones([4])).dataSync();
            tf.clone(x).dataSync();
            tf.cast(x, 'float32').dataSync();
            tf.cast(x, 'int32').dataSync();
          }),
        );
      }
    };
    expectNoGrowth(all, 5);
  });

  it('rejects NCHW and dilations other than 1 with a clear message', () => {
    const call = (attrs: Record<string, unknown>) =>
      tf.tidy(() => {
        const x = tf.zeros([1, 4, 4, 1]);
        const dy = tf.zeros([1, 4, 4, 1]);
        conv2DBackpropFilterWasm({
          inputs: { x, dy },
          backend: tf.findBackend('wasm'),
          attrs: { strides: [1, 1], pad: 'same', filterShape: [3, 3, 1, 1], ...attrs } as unknown as tf.NamedAttrMap,
        });
      });
    void tf.setBackend('wasm');
    expect(() => call({ dataFormat: 'NCHW' })).toThrow(/dataFormat 'NCHW' is not supported/);
    expect(() => call({ dataFormat: 'NHWC', dilations: [2, 2] })).toThrow(/dilations \[2,2\] are not supported/);
    expect(() =>
      tf.tidy(() => {
        conv2DBackpropInputWasm({
          inputs: { dy: tf.zeros([1, 4, 4, 1]), filter: tf.zeros([3, 3, 1, 1]) },
          backend: tf.findBackend('wasm'),
          attrs: { strides: [1, 1], pad: 'same', inputShape: [1, 4, 4, 1], dataFormat: 'NCHW' },
        });
      }),
    ).toThrow(/Conv2DBackpropInput \(wasm, HistoFed\): dataFormat 'NCHW'/);
  });
});
