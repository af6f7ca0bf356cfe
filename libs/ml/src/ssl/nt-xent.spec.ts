import * as tf from '@tensorflow/tfjs-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { ntXentLoss } from './nt-xent';

/** NT-Xent in plain arithmetic, from its definition (float64). */
function reference(z1: number[][], z2: number[][], tau: number): number {
  const rows = [...z1, ...z2].map((r) => {
    const len = Math.hypot(...r);
    return r.map((v) => v / len);
  });
  const n = z1.length;
  const dot = (a: number[], b: number[]) => a.reduce((s, v, j) => s + v * b[j], 0);
  let total = 0;
  rows.forEach((u, i) => {
    const p = i < n ? i + n : i - n;
    let denominator = 0;
    rows.forEach((v, k) => k !== i && (denominator += Math.exp(dot(u, v) / tau)));
    total += -Math.log(Math.exp(dot(u, rows[p]) / tau) / denominator);
  });
  return total / rows.length;
}

describe('NT-Xent (SimCLR)', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });

  it('equals the definition on a hand-sized case, and on random projections', () => {
    // Two images, 2-D projections: view 2 of each image points near view 1.
    const z1 = [
      [1, 0],
      [0, 2],
    ];
    const z2 = [
      [0.9, 0.1],
      [0.2, 1],
    ];
    // By hand at tau 1: u = (1,0), (0,1), (0.9939,0.1104), (0.1961,0.9806); for row 0 the positive
    // is row 2 (cos 0.9939) and the negatives rows 1 (cos 0) and 3 (cos 0.1961).
    const row0 = -Math.log(Math.exp(0.99388) / (Math.exp(0) + Math.exp(0.99388) + Math.exp(0.19612)));
    expect(row0).toBeCloseTo(0.5991, 3);
    const loss = ntXentLoss(tf.tensor2d(z1), tf.tensor2d(z2), 1);
    expect(loss.dataSync()[0]).toBeCloseTo(reference(z1, z2, 1), 5);
    loss.dispose();
    const rand = () => Array.from({ length: 5 }, () => Array.from({ length: 3 }, () => Math.random() * 2 - 1));
    const [a, b] = [rand(), rand()];
    const l2 = ntXentLoss(tf.tensor2d(a), tf.tensor2d(b), 0.2);
    expect(l2.dataSync()[0]).toBeCloseTo(reference(a, b, 0.2), 4);
    l2.dispose();
  });

  it('is lower when the views agree, and its gradient pulls a view towards its partner', () => {
    const agree = ntXentLoss(tf.tensor2d([[1, 0], [0, 1]]), tf.tensor2d([[1, 0.05], [0.05, 1]]), 0.5);
    const swapped = ntXentLoss(tf.tensor2d([[1, 0], [0, 1]]), tf.tensor2d([[0.05, 1], [1, 0.05]]), 0.5);
    expect(agree.dataSync()[0]).toBeLessThan(swapped.dataSync()[0]);
    tf.dispose([agree, swapped]);
    const z1 = tf.variable(tf.tensor2d([[1, 0.3], [0.2, 1]]));
    const z2 = tf.tensor2d([[1, 0], [0, 1]]);
    const before = ntXentLoss(z1, z2, 0.5).dataSync()[0];
    const opt = tf.train.sgd(0.5);
    for (let i = 0; i < 20; i++) opt.minimize(() => ntXentLoss(z1, z2, 0.5));
    expect(ntXentLoss(z1, z2, 0.5).dataSync()[0]).toBeLessThan(before);
    tf.dispose([z1, z2]);
    opt.dispose();
  });

  it('leaves no tensor behind and refuses what it cannot compute', () => {
    const z = tf.tensor2d([[1, 2], [3, 4]]);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      ntXentLoss(z, z);
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(() => ntXentLoss(tf.tensor2d([[1, 2]]), tf.tensor2d([[1, 2]]))).toThrow(/at least 2 images/);
    expect(() => ntXentLoss(z, tf.tensor2d([[1, 2, 3], [4, 5, 6]]))).toThrow(ValidationError);
    expect(() => ntXentLoss(z, z, 0)).toThrow(/tau/);
    z.dispose();
  });
});
