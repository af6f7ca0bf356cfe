/**
 * The supervised stage of bench:ssl, shared by every arm: a classifier on per-tile representations
 * trained on the labelled patients' tiles (Adam, class-balanced cross-entropy, a fixed number of
 * steps: nothing is selected on any held-out data), then scored on the test patients' images (an
 * image's probability = the mean of its tiles', as the default model does; stage-1 balanced accuracy
 * and ROC AUC of the images).
 *
 * - probe: standardized representation -> dropout -> softmax layer (a linear probe);
 * - fine-tune (feature arms): standardized ImageNet features -> the adapter's dense ReLU layers
 *   (initialised from SSL, or at random for the ImageNet arm) -> dropout -> softmax, all trained.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { NamedTensor } from '@histofed/fl-core';
import { averageRowsPerImage, balancedClassWeights, classificationMetrics, crossEntropy, mixSeed, shuffledIndices } from '@histofed/ml';
import type { Score } from './summary';

/** Tile rows of a set of images: `count` rows of `d` values; row r belongs to image imageOf[r]. */
export interface RowSet {
  readonly x: Float32Array;
  readonly d: number;
  readonly count: number;
  /** Per row: the stage-1 class of its image. */
  readonly labels: Int32Array;
  readonly imageOf: Int32Array;
  /** Per image: its stage-1 class. */
  readonly imageLabels: Int32Array;
}

/** The same rows with other values (e.g. a representation of them). */
export const withValues = (rows: RowSet, x: Float32Array, d: number): RowSet => ({ ...rows, x, d });

/** The rows of the images whose indices `keep` says (re-numbered in order). */
export function keepImages(rows: RowSet, keep: (image: number) => boolean): RowSet {
  const newIndex = new Int32Array(rows.imageLabels.length).fill(-1);
  const imageLabels: number[] = [];
  rows.imageLabels.forEach((l, i) => {
    if (keep(i)) {
      newIndex[i] = imageLabels.length;
      imageLabels.push(l);
    }
  });
  const kept: number[] = [];
  for (let r = 0; r < rows.count; r++) if (newIndex[rows.imageOf[r]] >= 0) kept.push(r);
  const x = new Float32Array(kept.length * rows.d);
  kept.forEach((r, i) => x.set(rows.x.subarray(r * rows.d, (r + 1) * rows.d), i * rows.d));
  return {
    x,
    d: rows.d,
    count: kept.length,
    labels: Int32Array.from(kept, (r) => rows.labels[r]),
    imageOf: Int32Array.from(kept, (r) => newIndex[rows.imageOf[r]]),
    imageLabels: Int32Array.from(imageLabels),
  };
}

/** Per-value mean and standard deviation of `rows` (the fold's training tiles: no label, no test patient). */
export function standardizer(rows: RowSet): (x: Float32Array) => Float32Array {
  const { d, count } = rows;
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (let r = 0; r < count; r++) {
    for (let j = 0; j < d; j++) {
      const v = rows.x[r * d + j];
      mean[j] += v;
      sq[j] += v * v;
    }
  }
  const sd = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    mean[j] /= count;
    sd[j] = Math.sqrt(Math.max(0, sq[j] / count - mean[j] * mean[j])) + 1e-6;
  }
  return (x) => {
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = (x[i] - mean[i % d]) / sd[i % d];
    return out;
  };
}

export interface HeadRecipe {
  readonly epochs: number;
  /** At least this many steps (small label sets get as many updates as a fixed minimum). */
  readonly minSteps: number;
  readonly batchSize: number;
  readonly learningRate: number;
  /** Dropout before the softmax layer. */
  readonly dropout: number;
}

/** A linear probe: representation -> dropout -> softmax. */
export function probeModel(d: number, dropout: number, seed: number): tfl.LayersModel {
  const input = tfl.input({ shape: [d] });
  const h = tfl.layers.dropout({ rate: dropout, seed }).apply(input) as tfl.SymbolicTensor;
  const y = tfl.layers.dense({ name: 'head', units: 2, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({ seed: seed + 1 }) }).apply(h);
  return tfl.model({ inputs: input, outputs: y as tfl.SymbolicTensor });
}

/**
 * Features -> the adapter's dense ReLU layers (`adapter1`, ... as buildFeatureAdapter names them;
 * the same input dropout) -> dropout -> softmax. `weights`: the pretrained adapter's (by name), or
 * none for a random start (glorot-uniform from `seed`).
 */
export function adapterClassifier(d: number, units: readonly number[], inputDropout: number, dropout: number, seed: number, weights?: readonly NamedTensor[]): tfl.LayersModel {
  const input = tfl.input({ shape: [d] });
  let h = tfl.layers.dropout({ rate: inputDropout, seed: seed + 3 }).apply(input) as tfl.SymbolicTensor;
  const layers = units.map((u, i) => tfl.layers.dense({ name: `adapter${i + 1}`, units: u, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({ seed: seed + 10 + i }) }));
  for (const l of layers) h = l.apply(h) as tfl.SymbolicTensor;
  h = tfl.layers.dropout({ rate: dropout, seed }).apply(h) as tfl.SymbolicTensor;
  const y = tfl.layers.dense({ name: 'head', units: 2, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({ seed: seed + 1 }) }).apply(h);
  const model = tfl.model({ inputs: input, outputs: y as tfl.SymbolicTensor });
  if (weights !== undefined) {
    for (const l of layers) {
      const find = (name: string) => {
        const w = weights.find((t) => t.name === `${l.name}/${name}`);
        if (w === undefined) throw new Error(`adapterClassifier: no pretrained ${l.name}/${name}`);
        return tf.tensor(w.values, [...w.shape]);
      };
      const ts = [find('kernel'), find('bias')];
      l.setWeights(ts);
      tf.dispose(ts);
    }
  }
  return model;
}

/** Trains `model` (every trainable weight) on the rows; returns the mean loss of the last 20 steps. */
export function trainRows(model: tfl.LayersModel, rows: RowSet, r: HeadRecipe, seed: number): number {
  const batches = Math.ceil(rows.count / r.batchSize);
  const steps = Math.max(r.epochs * batches, r.minSteps);
  const cw = balancedClassWeights(rows.labels, 2);
  const optimizer = tf.train.adam(r.learningRate);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const xb = new Float32Array(r.batchSize * rows.d);
  let order = shuffledIndices(rows.count, mixSeed(seed, 1));
  let at = 0;
  let epoch = 1;
  const recent: number[] = [];
  try {
    for (let s = 0; s < steps; s++) {
      if (at >= rows.count) {
        order = shuffledIndices(rows.count, mixSeed(seed, ++epoch));
        at = 0;
      }
      const idx = order.subarray(at, Math.min(rows.count, at + r.batchSize));
      at += r.batchSize;
      const n = idx.length;
      idx.forEach((row, i) => xb.set(rows.x.subarray(row * rows.d, (row + 1) * rows.d), i * rows.d));
      const loss = tf.tidy(() => {
        const x = tf.tensor2d(xb.subarray(0, n * rows.d), [n, rows.d]);
        const y = tf.tensor1d(Int32Array.from(idx, (row) => rows.labels[row]), 'int32');
        const w = tf.tensor1d(Float32Array.from(idx, (row) => cw[rows.labels[row]]));
        return optimizer.minimize(() => crossEntropy(model.apply(x, { training: true }) as tf.Tensor2D, y, w), true, vars) as tf.Scalar;
      });
      if (s >= steps - 20) recent.push(loss.dataSync()[0]);
      loss.dispose();
    }
  } finally {
    optimizer.dispose();
  }
  return recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
}

/** The model's outputs ([count, width]) on flat rows of shape `shape`, in batches (inference mode). */
export function predictFlat(model: tfl.LayersModel, x: Float32Array, count: number, shape: readonly number[], batchSize = 256): Float32Array {
  const per = shape.reduce((a, b) => a * b, 1);
  let out: Float32Array | null = null;
  let width = 0;
  for (let s = 0; s < count; s += batchSize) {
    const n = Math.min(count, s + batchSize) - s;
    const y = tf.tidy(() => model.predict(tf.tensor(x.subarray(s * per, (s + n) * per), [n, ...shape])) as tf.Tensor);
    const v = y.dataSync() as Float32Array;
    if (out === null) {
      width = v.length / n;
      out = new Float32Array(count * width);
    }
    out.set(v, s * width);
    y.dispose();
  }
  return out ?? new Float32Array(0);
}

/** Image-level stage-1 balanced accuracy and AUC of per-row softmax outputs. */
export function scoreOutputs(rows: RowSet, outputs: Float32Array): Score {
  const probs = averageRowsPerImage(outputs, 2, rows.imageOf, rows.imageLabels.length);
  const m = classificationMetrics(rows.imageLabels, probs, 2);
  return { balancedAccuracy: m.balancedAccuracy, auc: m['auc'] ?? null };
}

/** Trains a fresh model from `build` on `train`, scores it on `test`, disposes it. */
export function trainAndScore(build: () => tfl.LayersModel, train: RowSet, test: RowSet, r: HeadRecipe, seed: number): Score & { loss: number } {
  const model = build();
  try {
    const loss = trainRows(model, train, r, seed);
    return { ...scoreOutputs(test, predictFlat(model, test.x, test.count, [test.d])), loss };
  } finally {
    model.dispose();
  }
}
