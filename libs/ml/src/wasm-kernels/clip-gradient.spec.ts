import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { CLIP_BY_VALUE_GRAD, clipGradKernelOn } from './clip-gradient';
import {
  exact,
  expectAsOnCpu,
  expectNoGrowth,
  expectWasmKernel,
  isHistoFed,
  loadCpuAndWasm,
  lossAndGradients,
  setSeededWeights,
  testModes,
  values,
  wasmBackend,
} from './kernel-test-helpers';

/** The float32 neighbours of the float32 v: the next value down and the next up. */
function neighbours(v: number): [number, number] {
  if (v === 0) return [Math.fround(-1e-45), Math.fround(1e-45)]; // the smallest subnormals
  const bits = new Int32Array(new Float32Array([v]).buffer)[0];
  const at = (b: number) => new Float32Array(new Int32Array([b]).buffer)[0];
  // the bit pattern grows with the magnitude
  return v > 0 ? [at(bits - 1), at(bits + 1)] : [at(bits + 1), at(bits - 1)];
}

/** 'fast': the CLIP_BY_VALUE_GRAD kernel (SIMD); 'fallback': tfjs-core's composition (fast paths off). */
const { modes: MODES, on } = testModes({ fast: {}, fallback: { fastPaths: false } });
type Mode = (typeof MODES)[number];

interface Case {
  shape: number[];
  min: number;
  max: number;
}

const BOUNDS: [number, number][] = [
  [0, 6], // Keras' ReLU6
  [-1, 1],
  [0.1, 0.7], // not float32 numbers: compared as float32, as tfjs-core's gradient does
  [1, 1.0000001], // one float32 apart (clipByValue with min === max is a fill: no gradient)
  [Number.NEGATIVE_INFINITY, 2],
  [-2, Number.POSITIVE_INFINITY],
  [-1e-7, 1e40], // 1e40 is Infinity as a float32
];
const SHAPES = [[1], [3], [4], [7], [16], [17], [3, 5, 7], [2, 9, 9, 4], [2, 4, 4, 16], [1, 13, 11, 3]];
const cases: Case[] = [];
BOUNDS.forEach(([min, max], i) => {
  for (const shape of i === 0 ? SHAPES : SHAPES.filter((_s, j) => (j + i) % 3 === 0)) cases.push({ shape, min, max });
});

/** x with values around and exactly at the bounds (and their float32 neighbours), NaN, +-Infinity, -0. */
function inputs(c: Case): { x: Float32Array; dy: Float32Array } {
  const n = tf.util.sizeFromShape(c.shape);
  const lo = Number.isFinite(c.min) ? c.min : -10;
  const hi = Number.isFinite(c.max) && c.max < 1e30 ? c.max : 10;
  const x = values(n, 3 + n, lo - 2, hi + 2);
  const special = [c.min, c.max, Math.fround(c.min), Math.fround(c.max), NaN, Infinity, -Infinity, 0, -0];
  for (const b of [c.min, c.max]) if (Number.isFinite(Math.fround(b))) special.push(...neighbours(Math.fround(b)));
  // the special values at every other position, in every lane of the SIMD loop and the JS tail
  for (let i = 0; i < n; i += 2) x[i] = special[(i / 2) % special.length];
  x[n - 1] = special[n % special.length];
  const dy = values(n, 11 + n, -4, 4);
  if (n > 4) {
    dy[1] = NaN;
    dy[2] = Infinity;
    dy[3] = -0;
    dy[n - 2] = -Infinity;
  }
  return { x, dy };
}

/** The gradient of clipByValue through tf.grad on `backend`. */
function clipGradient(backend: string, mode: Mode, c: Case): Float32Array {
  const { x, dy } = inputs(c);
  return on(backend, mode, () =>
    tf.tidy(
      () =>
        tf
          .grad((t: tf.Tensor) => tf.clipByValue(t, c.min, c.max))(tf.tensor(x, c.shape), tf.tensor(dy, c.shape))
          .dataSync() as Float32Array,
    ),
  );
}

/** The CLIP_BY_VALUE_GRAD kernel called directly on wasm ('fallback': its JavaScript loop). */
function kernelResult(mode: Mode, c: Case): Float32Array {
  const { x, dy } = inputs(c);
  return on('wasm', mode, () =>
    tf.tidy(() => {
      const out = tf
        .engine()
        .runKernel(
          CLIP_BY_VALUE_GRAD,
          { x: tf.tensor(x, c.shape), dy: tf.tensor(dy, c.shape) },
          { clipValueMin: c.min, clipValueMax: c.max },
        ) as tf.Tensor;
      expect(out.shape).toEqual(c.shape);
      expect(out.dtype).toBe('float32');
      return out.dataSync() as Float32Array;
    }),
  );
}

/** A MobileNetV2-like block: 1x1 expansion, ReLU6, depthwise 3x3, ReLU6, 1x1 projection, head. */
function blockModel(): tfl.LayersModel {
  const model = tfl.sequential();
  model.add(tfl.layers.conv2d({ inputShape: [6, 5, 3], filters: 8, kernelSize: 1, useBias: false }));
  model.add(tfl.layers.reLU({ maxValue: 6 }));
  model.add(tfl.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', useBias: false }));
  model.add(tfl.layers.reLU({ maxValue: 6 }));
  model.add(tfl.layers.conv2d({ filters: 4, kernelSize: 1 }));
  model.add(tfl.layers.globalAveragePooling2d({}));
  model.add(tfl.layers.dense({ units: 2 }));
  return model;
}

/** The gradients of a blockModel's weights (the same weights on every backend) through variableGrads. */
function modelGradients(backend: string, mode: Mode): Float32Array[] {
  return on(backend, mode, () => {
    const model = blockModel();
    try {
      setSeededWeights(model, 31, -1.5, 1.5);
      return lossAndGradients(model, () => tf.tensor4d(values(3 * 6 * 5 * 3, 5, -3, 3), [3, 6, 5, 3]), true).slice(1);
    } finally {
      model.dispose();
    }
  });
}

/** A second-order gradient through the clip: d/dw of sum(c * d/dx sum(w * clip(x))) = c * mask. */
function secondOrder(backend: string, mode: Mode): Float32Array {
  return on(backend, mode, () =>
    tf.tidy(() => {
      const x = tf.tensor2d(values(5 * 7, 41, -2, 8), [5, 7]);
      const c = tf.tensor2d(values(5 * 7, 43), [5, 7]);
      const w0 = tf.tensor2d(values(5 * 7, 47), [5, 7]);
      const outer = tf.grad((w: tf.Tensor) => {
        const inner = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.clipByValue(t, 0, 6), w)))(x);
        return tf.sum(tf.mul(inner, c));
      });
      return outer(w0).dataSync() as Float32Array;
    }),
  );
}

describe('ClipByValue gradient on wasm (HistoFedClipByValueGrad)', () => {
  beforeAll(loadCpuAndWasm);

  it('is registered for wasm only, with the SIMD kernel available on this engine', () => {
    expectWasmKernel(CLIP_BY_VALUE_GRAD, true);
    expect(isHistoFed(tf.getGradient(tf.ClipByValue)?.gradFunc)).toBe(true);
    expect(tf.getGradient(CLIP_BY_VALUE_GRAD)).toBeDefined();
    expect(clipGradKernelOn(wasmBackend())).not.toBeNull();
  });

  it.each(cases.map((c) => [`[${c.shape}], min ${c.min}, max ${c.max}`, c] as const))(
    'tf.grad(clipByValue) equals the cpu backend exactly for %s',
    (_name, c) => {
      const cpu = exact(clipGradient('cpu', 'fast', c));
      for (const mode of MODES) expect(exact(clipGradient('wasm', mode, c))).toEqual(cpu);
      // the kernel itself, on SIMD and on its JavaScript loop
      for (const mode of MODES) expect(exact(kernelResult(mode, c))).toEqual(cpu);
    },
  );

  it('covers the boundaries, NaN and infinities in the test data (passing and masked)', () => {
    const c = { shape: [3, 5, 7], min: 0, max: 6 };
    const { x, dy } = inputs(c);
    const g = clipGradient('cpu', 'fast', c);
    const at = (v: number) => x.findIndex((e) => Object.is(e, v));
    for (const v of [0, 6, -0]) expect(g[at(v)]).toBe(dy[at(v)]); // at the bounds: dy
    for (const v of [NaN, Infinity, -Infinity, neighbours(0)[0], neighbours(6)[1]]) expect(at(v)).toBeGreaterThanOrEqual(0);
    for (const v of [Infinity, -Infinity, neighbours(0)[0], neighbours(6)[1]]) expect(Object.is(g[at(v)], 0)).toBe(true);
    expect(Object.is(g[x.findIndex((e) => Number.isNaN(e))], 0)).toBe(true);
    expect(exact(g).filter((v) => v === 'NaN' || v === '-0').length).toBeGreaterThan(0); // dy's NaN / -0 passed
  });

  it('runs one kernel on the fast path and tfjs-core composition on the fallback', async () => {
    const x = tf.tensor(values(2 * 7 * 7 * 8, 3, -2, 8), [2, 7, 7, 8]);
    const dy = tf.tensor(values(2 * 7 * 7 * 8, 5), [2, 7, 7, 8]);
    const kernels = async (mode: Mode) => {
      const p = await tf.profile(() =>
        on('wasm', mode, () => {
          tf.tidy(() => tf.grad((t: tf.Tensor) => tf.clipByValue(t, 0, 6))(x, dy).dataSync());
        }),
      );
      return p.kernels.map((k) => k.name);
    };
    const fast = await kernels('fast');
    expect(fast).toContain(CLIP_BY_VALUE_GRAD);
    expect(fast).not.toContain('GreaterEqual');
    expect(fast).not.toContain('Select');
    const fallback = await kernels('fallback');
    expect(fallback).not.toContain(CLIP_BY_VALUE_GRAD);
    expect(fallback).toEqual(expect.arrayContaining(['GreaterEqual', 'LessEqual', 'LogicalAnd', 'Select']));
    tf.dispose([x, dy]);
  });

  it('gives a tfjs-layers model with ReLU(maxValue 6) the same gradients as cpu', () => {
    expectAsOnCpu(MODES, modelGradients);
  });

  it('gives second-order gradients through the clip as cpu', () => {
    const cpu = secondOrder('cpu', 'fast');
    expect(cpu.some((v) => v === 0) && cpu.some((v) => v !== 0)).toBe(true);
    for (const mode of MODES) expect(exact(secondOrder('wasm', mode))).toEqual(exact(cpu));
  });

  it('handles empty tensors and refuses other operands with a clear message', () => {
    const empty = { shape: [0, 3], min: 0, max: 6 };
    for (const mode of MODES) {
      const g = on('wasm', mode, () =>
        tf.tidy(() => tf.grad((t: tf.Tensor) => tf.clipByValue(t, 0, 6))(tf.zeros(empty.shape)).dataSync()),
      );
      expect(g.length).toBe(0);
    }
    const call = (x: tf.Tensor, dy: tf.Tensor) => () =>
      on('wasm', 'fast', () =>
        tf.tidy(() => tf.engine().runKernel(CLIP_BY_VALUE_GRAD, { x, dy }, { clipValueMin: 0, clipValueMax: 1 })),
      );
    on('wasm', 'fast', () =>
      tf.tidy(() => {
        expect(call(tf.zeros([2, 3]), tf.zeros([3, 2]))).toThrow(/HistoFedClipByValueGrad \(wasm, HistoFed\).*same shape/);
        expect(call(tf.zeros([2, 3], 'int32'), tf.zeros([2, 3]))).toThrow(/float32/);
      }),
    );
  });

  it('frees every intermediate (no tensor, data buffer or wasm memory growth)', () => {
    const all = () => {
      for (const mode of MODES) {
        for (const c of cases.slice(0, 12)) {
          clipGradient('wasm', mode, c);
          kernelResult(mode, c);
        }
        modelGradients('wasm', mode);
        secondOrder('wasm', mode);
      }
    };
    expectNoGrowth(all, 5);
  });
});
