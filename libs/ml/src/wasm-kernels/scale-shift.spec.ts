import * as tf from '@tensorflow/tfjs-core';
import { channelScaleShift } from '../wasm-training-kernels';
import { exact, expectClose, expectNoGrowth, expectWasmKernel, loadCpuAndWasm, testModes, values, wasmBackend } from './kernel-test-helpers';
import { SCALE_SHIFT, SCALE_SHIFT_GRAD, scaleShiftKernelsOn } from './scale-shift';

/**
 * 'fast': the SCALE_SHIFT kernels; 'composed': the fast paths on but these kernels off (the tf
 * composition add(mul(x, scale), shift) on HistoFed's SIMD Sum: what ran before them); 'fallback':
 * every fast path off.
 */
const { modes: MODES, on } = testModes({ fast: {}, composed: { scaleShift: false }, fallback: { fastPaths: false } });
type Mode = (typeof MODES)[number];

interface Case {
  shape: number[];
  /** NaN, infinities and -0 in x and dy. */
  special?: boolean;
}

/** y and the three gradients of channelScaleShift(x, scale, shift) for the output gradient dy on `backend`. */
function run(backend: string, mode: Mode, c: Case): Float32Array[] {
  const n = tf.util.sizeFromShape(c.shape);
  const ch = c.shape[c.shape.length - 1];
  const xv = values(n, 3 + n, -3, 3);
  const dyv = values(n, 5 + n);
  if (c.special) {
    [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 0].forEach((v, i) => {
      xv[(7 * i) % n] = v;
      dyv[(11 * i + 3) % n] = v;
    });
  }
  return on(backend, mode, () =>
    tf.tidy(() => {
      const x = tf.tensor(xv, c.shape);
      const dy = tf.tensor(dyv, c.shape);
      const scale = tf.tensor1d(values(ch, 13, -2, 2));
      const shift = tf.tensor1d(values(ch, 17, -2, 2));
      const y = channelScaleShift(x, scale, shift);
      const g = tf.grads((a: tf.Tensor, s: tf.Tensor, b: tf.Tensor) => channelScaleShift(a, s, b))([x, scale, shift], dy);
      expect(y.shape).toEqual(c.shape);
      expect(g.map((t) => t.shape)).toEqual([c.shape, [ch], [ch]]);
      return [y, ...g].map((t) => t.dataSync() as Float32Array);
    }),
  );
}

const cases: Case[] = [];
for (const shape of [[4], [3, 8], [1, 1, 1, 4], [2, 3, 5, 8], [3, 7, 7, 12], [1, 14, 14, 64], [2, 7, 7, 384], [3, 20, 20, 16]]) {
  cases.push({ shape });
}
cases.push({ shape: [2, 5, 5, 8], special: true });
cases.push({ shape: [3, 15, 13, 12], special: true }); // more than one float32 block (512 rows)
// channel counts the kernels do not take (not multiples of 4): the composition on every mode
cases.push({ shape: [2, 3, 3, 3] });
cases.push({ shape: [2, 4, 4, 6], special: true });

describe('FrozenBatchNorm scale and shift on wasm (HistoFedScaleShift, HistoFedScaleShiftGrad)', () => {
  beforeAll(loadCpuAndWasm);

  it('are registered for wasm only, with the SIMD kernels available on this engine', () => {
    for (const name of [SCALE_SHIFT, SCALE_SHIFT_GRAD]) expectWasmKernel(name, true);
    expect(scaleShiftKernelsOn(wasmBackend())).not.toBeNull();
  });

  it.each(cases.map((c) => [JSON.stringify(c), c] as const))('match the cpu backend for %s', (_n, c) => {
    const cpu = run('cpu', 'fast', c);
    const composed = run('wasm', 'composed', c);
    for (const mode of MODES) {
      const wasm = run('wasm', mode, c);
      // y and dx exactly (the same float32 products and sums), the reductions within 1e-4
      expect(exact(wasm[0])).toEqual(exact(cpu[0]));
      expect(exact(wasm[1])).toEqual(exact(cpu[1]));
      expectClose(wasm[2], cpu[2]);
      expectClose(wasm[3], cpu[3]);
    }
    // and bit for bit what the composition gave on wasm's fast paths before these kernels
    expect(run('wasm', 'fast', c).map(exact)).toEqual(composed.map(exact));
  });

  it('runs one kernel each way on the fast path, the composition otherwise', async () => {
    const kernels = async (mode: Mode) =>
      on('wasm', mode, () => tf.profile(() => void run('wasm', mode, { shape: [2, 4, 4, 8] })));
    const fast = (await kernels('fast')).kernels.map((k) => k.name);
    expect(fast).toEqual(expect.arrayContaining([SCALE_SHIFT, SCALE_SHIFT_GRAD]));
    for (const name of ['Multiply', 'Add', 'Sum']) expect(fast).not.toContain(name);
    for (const mode of ['composed', 'fallback'] as const) {
      const names = (await kernels(mode)).kernels.map((k) => k.name);
      expect(names).not.toContain(SCALE_SHIFT);
      expect(names).toEqual(expect.arrayContaining(['Multiply', 'Add', 'Sum']));
    }
  });

  it('gives second-order gradients as cpu (the gradient of HistoFedScaleShiftGrad)', () => {
    const second = (backend: string, mode: Mode) =>
      on(backend, mode, () =>
        tf.tidy(() => {
          const shape = [2, 3, 5, 8];
          const n = tf.util.sizeFromShape(shape);
          const x = tf.tensor(values(n, 3, -3, 3), shape);
          const b = tf.tensor1d(values(8, 17));
          const [c1, c2, c3] = [tf.tensor(values(n, 23), shape), tf.tensor1d(values(8, 29)), tf.tensor1d(values(8, 31))];
          // d/d(w, scale) of <c1, dx> + <c2, dScale> + <c3, dShift>, the gradients of sum(w * y)
          const outer = tf.grads((w: tf.Tensor, s: tf.Tensor) => {
            const [dx, ds, db] = tf.grads((a: tf.Tensor, sc: tf.Tensor, sh: tf.Tensor) =>
              tf.sum(tf.mul(channelScaleShift(a, sc, sh), w)),
            )([x, s, b]);
            return tf.addN([tf.sum(tf.mul(dx, c1)), tf.sum(tf.mul(ds, c2)), tf.sum(tf.mul(db, c3))]);
          });
          return outer([tf.tensor(values(n, 37), shape), tf.tensor1d(values(8, 41, -2, 2))]).map((t) => t.dataSync() as Float32Array);
        }),
      );
    const cpu = second('cpu', 'fast');
    for (const mode of MODES) second('wasm', mode).forEach((g, i) => expectClose(g, cpu[i]));
  });

  it('refuses operands it does not take with a clear message', () => {
    on('wasm', 'fast', () =>
      tf.tidy(() => {
        const call = (x: tf.Tensor, s: tf.Tensor) => () => tf.engine().runKernel(SCALE_SHIFT, { x, scale: s, shift: s });
        expect(call(tf.zeros([2, 6]), tf.zeros([6]))).toThrow(/HistoFedScaleShift \(wasm, HistoFed\).*multiple of 4/);
        expect(call(tf.zeros([2, 8]), tf.zeros([4]))).toThrow(/scale, shift \[c\]/);
        const grad = () => tf.engine().runKernel(SCALE_SHIFT_GRAD, { dy: tf.zeros([3, 8]), x: tf.zeros([2, 8]), scale: tf.zeros([8]) });
        expect(grad).toThrow(/HistoFedScaleShiftGrad \(wasm, HistoFed\).*one shape/);
      }),
    );
  });

  it('frees every intermediate (no tensor, data buffer or wasm memory growth)', () => {
    expectNoGrowth(() => {
      for (const mode of MODES) for (const c of cases) run('wasm', mode, c);
    }, 3);
  });
});
