import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages, ModelSpec, NamedTensor } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { composeTileClassifier } from '../backbones/tile-classifier';
import { fit } from '../fit';
import { buildModel } from '../models';
import { trainLocalParallel } from '../parallel-training';
import { brightDarkImages, twoStageImages } from '../testing/synthetic';
import { trainLocal, type TrainOptions, type TrainProgress } from '../train';
import { getWeights, setWeights } from '../weights-bridge';
import { covarianceOf, momentsOfRows, type FeatureMoments } from './feature-moments';
import { featureMoments, penultimateDim } from './penultimate';

beforeAll(async () => {
  await selectBackend('wasm');
});

/** Float64 moments written out directly (no shared code). */
function directMoments(rows: ArrayLike<number>, n: number, d: number): { mean: number[]; second: number[] } {
  const mean = new Array<number>(d).fill(0);
  const second = new Array<number>(d * d).fill(0);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < d; i++) {
      mean[i] += rows[r * d + i] / n;
      for (let j = 0; j < d; j++) second[i * d + j] += (rows[r * d + i] * rows[r * d + j]) / n;
    }
  }
  return { mean, second };
}

function expectMomentsClose(m: FeatureMoments, e: { mean: number[]; second: number[] }, tol: number): void {
  for (let i = 0; i < e.mean.length; i++) expect(Math.abs(m.mean[i] - e.mean[i])).toBeLessThan(tol * Math.max(1, Math.abs(e.mean[i])));
  for (let i = 0; i < e.second.length; i++) expect(Math.abs(m.secondMoment[i] - e.second[i])).toBeLessThan(tol * Math.max(1, Math.abs(e.second[i])));
}

const BACKBONE_HEAD: ModelSpec = {
  kind: 'backbone-head',
  imageSize: 64,
  numClasses: 2,
  backbone: { name: 'mobilenet-v2-imagenet', cut: 'block_6_expand_relu', input: 'unit', features: 6 },
  tiles: { scale: 0.5, views: 2 },
  options: { denseUnits: 5, dropout: 0.5 },
};

function featureRows(n: number, d: number, seed: number): LabeledImages {
  const images = Float32Array.from({ length: n * d }, (_, i) => Math.sin(i * 0.37 + seed) * 2 + Math.cos(i * 0.11));
  return { images, count: n, imageSize: 64, sampleShape: [d], labels: Int32Array.from({ length: n }, (_, i) => i % 2) };
}

describe('featureMoments', () => {
  it('equals a direct float64 computation of the fc1 features (heads on backbone features, dropout skipped)', async () => {
    const model = buildModel(BACKBONE_HEAD, 3);
    const data = featureRows(23, 6, 1);
    expect(penultimateDim(model)).toBe(5);
    // Hand forward pass of fc1 (relu(x W + b)) in float64 from the model's weights.
    const w = new Map(getWeights(model).map((t) => [t.name, t.values]));
    const kernel = w.get('fc1/kernel') as Float32Array;
    const bias = w.get('fc1/bias') as Float32Array;
    const rows = new Float64Array(23 * 5);
    for (let r = 0; r < 23; r++) {
      for (let u = 0; u < 5; u++) {
        let s = bias[u];
        for (let k = 0; k < 6; k++) s += data.images[r * 6 + k] * kernel[k * 5 + u];
        rows[r * 5 + u] = Math.max(0, s);
      }
    }
    const before = tf.memory().numTensors;
    const m = await featureMoments(model, data, { batchSize: 4 });
    expect(tf.memory().numTensors).toBe(before);
    expect(m.count).toBe(23);
    expect(m.dim).toBe(5);
    expectMomentsClose(m, directMoments(rows, 23, 5), 1e-5);
    // Batch size does not matter beyond float32 rounding of the features.
    const whole = await featureMoments(model, data, { batchSize: 64 });
    expectMomentsClose(whole, directMoments(rows, 23, 5), 1e-5);
    model.dispose();
  });

  it('reads the fc1 features of a two-stage CNN (the input of head and subtype_head)', async () => {
    const model = buildModel({ kind: 'se-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { denseUnits: 7 } }, 2);
    const data = twoStageImages(10, 16, 4);
    const fc1 = tfl.model({ inputs: model.inputs, outputs: model.getLayer('fc1').output as tfl.SymbolicTensor });
    const feats = tf.tidy(() => (fc1.predict(tf.tensor4d(data.images, [10, 16, 16, 3])) as tf.Tensor).dataSync());
    const before = tf.memory().numTensors;
    const m = await featureMoments(model, data, { batchSize: 3 });
    expect(tf.memory().numTensors).toBe(before);
    expect(m.dim).toBe(7);
    expectMomentsClose(m, directMoments(feats, 10, 7), 1e-5);
    model.dispose();
  });

  it('finds the features inside a saved tile classifier (heads re-applied to a backbone)', async () => {
    const heads = buildModel(BACKBONE_HEAD, 3);
    const tile = tfl.input({ name: 'tile', shape: [4, 4, 3] });
    const pooled = tfl.layers.globalAveragePooling2d({ name: 'pool' }).apply(tile) as tfl.SymbolicTensor;
    const feat = tfl.layers.dense({ name: 'proj', units: 6, kernelInitializer: 'ones' }).apply(pooled) as tfl.SymbolicTensor;
    const featureModel = tfl.model({ inputs: tile, outputs: feat });
    const composed = composeTileClassifier(featureModel, heads);
    const tiles = Float32Array.from({ length: 9 * 48 }, (_, i) => (Math.sin(i) + 1) / 2);
    const m = await featureMoments(composed, { images: tiles, count: 9, imageSize: 4 });
    // The same rows through the two halves.
    const rows = tf.tidy(() => (featureModel.predict(tf.tensor4d(tiles, [9, 4, 4, 3])) as tf.Tensor).dataSync() as Float32Array);
    const direct = await featureMoments(heads, { images: rows, count: 9, imageSize: 4, sampleShape: [6] });
    expectMomentsClose(m, { mean: Array.from(direct.mean), second: Array.from(direct.secondMoment) }, 1e-5);
    heads.dispose();
  });

  it('takes the rows themselves when the heads read the features directly (denseUnits 0)', async () => {
    const model = buildModel({ ...BACKBONE_HEAD, options: { denseUnits: 0, dropout: 0 } }, 1);
    const data = featureRows(8, 6, 2);
    const m = await featureMoments(model, data);
    expectMomentsClose(m, directMoments(data.images, 8, 6), 1e-12);
    const reference = momentsOfRows(data.images, 8, 6);
    await expect(trainLocal(model, data, { ...OPTS, alignment: { method: 'coral', lambda: 1, reference } })).rejects.toThrow('denseUnits > 0');
    model.dispose();
  });

  it('refuses rows of another shape, naming the field', async () => {
    const model = buildModel(BACKBONE_HEAD, 1);
    await expect(featureMoments(model, featureRows(4, 5, 1))).rejects.toThrow('data: the model takes rows of 6');
    await expect(featureMoments(model, featureRows(4, 6, 1), { batchSize: 0 })).rejects.toThrow('batchSize');
    model.dispose();
  });
});

const OPTS: TrainOptions = { epochs: 1, batchSize: 8, learningRate: 0.01, proximalMu: 0, seed: 1 };
const CNN: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { dropout: 0, denseUnits: 8 } };

/** Frobenius distance between the covariances of two moments (float64). */
function covarianceGap(a: FeatureMoments, b: FeatureMoments): number {
  const ca = covarianceOf(a);
  const cb = covarianceOf(b);
  return Math.sqrt(ca.reduce((s, v, i) => s + (v - cb[i]) ** 2, 0));
}

function meanGap(a: FeatureMoments, b: FeatureMoments): number {
  return Math.sqrt(a.mean.reduce((s, v, i) => s + (v - b.mean[i]) ** 2, 0));
}

describe('trainLocal with alignment', () => {
  // Site A's images define the reference; site B's are the same kind of images, darker and with a colour cast.
  const siteA = brightDarkImages(48, 16, 5);
  const siteB: LabeledImages = { ...brightDarkImages(48, 16, 6) };
  siteB.images.forEach((v, i) => {
    siteB.images[i] = i % 3 === 0 ? v * 0.5 + 0.4 : v * 0.6;
  });

  // The round's global model: trained on site A, whose features define the reference.
  let global: NamedTensor[];
  let reference: FeatureMoments;
  beforeAll(async () => {
    const model = buildModel(CNN, 4);
    await trainLocal(model, siteA, { ...OPTS, epochs: 3 });
    global = getWeights(model);
    reference = await featureMoments(model, siteA);
    model.dispose();
  });

  it.each(['coral', 'mmd'] as const)('%s: lowers the alignment loss on a shifted site over a few steps, tensors flat', async (method) => {
    const model = buildModel(CNN, 1);
    const run = async (lambda: number) => {
      setWeights(model, global);
      const progress: TrainProgress[] = [];
      const tensors: number[] = [];
      const before = tf.memory().numTensors;
      const result = await trainLocal(model, siteB, {
        ...OPTS,
        epochs: 4,
        alignment: { method, lambda, reference },
        onProgress: (p) => {
          progress.push(p);
          tensors.push(tf.memory().numTensors);
        },
      });
      expect(tf.memory().numTensors).toBe(before);
      expect(new Set(tensors).size).toBe(1);
      return { progress, result, moments: await featureMoments(model, siteB) };
    };
    const start = await (async () => {
      setWeights(model, global);
      return featureMoments(model, siteB);
    })();
    const off = await run(0);
    const on = await run(1);
    const epochMean = (p: TrainProgress[], e: number) => p.filter((x) => x.epoch === e).reduce((s, x) => s + (x.alignment as number), 0) / 6;
    expect(on.progress.every((p) => typeof p.alignment === 'number' && Number.isFinite(p.alignment))).toBe(true);
    expect(on.result.alignment).toBeCloseTo(epochMean(on.progress, 4), 5);
    // The first step sees the global model's features (the same with and without alignment).
    expect(on.progress[0].alignment).toBeCloseTo(off.progress[0].alignment as number, 4);
    expect(epochMean(on.progress, 4)).toBeLessThan(0.4 * (on.progress[0].alignment as number));
    expect(epochMean(on.progress, 4)).toBeLessThan(0.4 * epochMean(off.progress, 4));
    // Measured on the whole site in inference mode: the features moved towards the reference.
    const gap = method === 'coral' ? covarianceGap : meanGap;
    expect(gap(on.moments, reference)).toBeLessThan(0.6 * gap(start, reference));
    expect(gap(on.moments, reference)).toBeLessThan(0.6 * gap(off.moments, reference));
    model.dispose();
  }, 60_000);

  it('lambda 0 trains as without alignment and still reports it; a 1-row batch skips CORAL', async () => {
    const a = buildModel(CNN, 4);
    const b = buildModel(CNN, 4);
    const data: LabeledImages = { images: siteB.images.subarray(0, 17 * 768), count: 17, imageSize: 16, labels: siteB.labels.subarray(0, 17) };
    const progress: TrainProgress[] = [];
    const ra = await trainLocal(a, data, { ...OPTS, alignment: { method: 'coral', lambda: 0, reference }, onProgress: (p) => progress.push(p) });
    const rb = await trainLocal(b, data, OPTS);
    expect(ra.loss).toBeCloseTo(rb.loss, 5);
    const wa = getWeights(a);
    const wb = getWeights(b);
    wa.forEach((t, i) => t.values.forEach((v, j) => expect(Math.abs(v - wb[i].values[j])).toBeLessThan(1e-5)));
    expect(progress.map((p) => p.alignment === undefined)).toEqual([false, false, true]); // batches of 8, 8, 1
    expect(rb.alignment).toBeUndefined();
    a.dispose();
    b.dispose();
  });

  it('trains a two-stage model (dropout) with MMD', async () => {
    const spec: ModelSpec = { kind: 'se-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { dropout: 0.25, denseUnits: 6 } };
    const model = buildModel(spec, 1);
    const data = twoStageImages(16, 16, 3);
    const reference = await featureMoments(model, twoStageImages(16, 16, 9));
    const r = await trainLocal(model, data, { ...OPTS, alignment: { method: 'mmd', lambda: 1, reference } });
    expect(Number.isFinite(r.loss) && Number.isFinite(r.alignment as number)).toBe(true);
    model.dispose();
  });

  it('trains heads on cached backbone features with CORAL (backbone-head)', async () => {
    const model = buildModel(BACKBONE_HEAD, 2);
    const reference = await featureMoments(model, featureRows(40, 6, 3));
    const progress: TrainProgress[] = [];
    const r = await trainLocal(model, featureRows(24, 6, 8), { ...OPTS, epochs: 2, alignment: { method: 'coral', lambda: 1, reference }, onProgress: (p) => progress.push(p) });
    expect(Number.isFinite(r.alignment as number)).toBe(true);
    expect(progress).toHaveLength(6);
    model.dispose();
  });

  it('refuses bad options naming the field; the pool refuses alignment; fit passes it on', async () => {
    const model = buildModel(CNN, 1);
    const other = momentsOfRows(new Float64Array(3 * 4).map((_, i) => i % 5), 3, 4);
    await expect(trainLocal(model, siteB, { ...OPTS, alignment: { method: 'coral', lambda: -1, reference } })).rejects.toThrow('alignment.lambda');
    await expect(trainLocal(model, siteB, { ...OPTS, alignment: { method: 'kl' as 'mmd', lambda: 1, reference } })).rejects.toThrow('alignment.method');
    await expect(trainLocal(model, siteB, { ...OPTS, alignment: { method: 'mmd', lambda: 1, reference: other } })).rejects.toThrow(
      'alignment.reference.dim: the model\'s penultimate features have 8 values, the reference 4',
    );
    await expect(
      trainLocal(model, siteB, { ...OPTS, alignment: { method: 'mmd', lambda: 1, reference: { ...reference, mean: new Float64Array(3) } } }),
    ).rejects.toThrow('alignment.reference.mean');
    await expect(trainLocalParallel(CNN, getWeights(model), siteB, { ...OPTS, workers: 1, alignment: { method: 'coral', lambda: 1, reference } })).rejects.toThrow(
      'the training pool does not support it',
    );
    const progress: TrainProgress[] = [];
    const r = await fit({ model, spec: CNN }, siteB, { ...OPTS, maxEpochs: 1, alignment: { method: 'coral', lambda: 1, reference }, onBatch: (p) => progress.push(p) });
    expect(r.epochsRun).toBe(1);
    expect(progress.every((p) => p.alignment !== undefined)).toBe(true);
    model.dispose();
  });
});
