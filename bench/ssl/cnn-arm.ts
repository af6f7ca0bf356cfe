/**
 * Arm randomSsl of bench:ssl: a compact CNN (`small-cnn`: 3x3 conv blocks 16/32/64, global average
 * pooling `gap`) from random initialisation, pretrained by federated NT-Xent on native-resolution
 * tiles (libs/ml buildContrastiveModel / contrastiveStep; libs/data contrastivePair: two strongly
 * augmented views — crop zoom, flips, quarter turns, HSV and HED jitter, blur — of one random tile of
 * an image), then
 *
 * - probe: a linear probe on its `gap` features (64) of each image's evaluation tiles;
 * - fine-tune: the whole CNN plus its classification head (dense 64 -> softmax) trained on the
 *   labelled images' augmented training crops (libs/ml TrainingPool: data-parallel worker threads).
 *
 * Images are decoded once at native resolution (scale 1, so nuclei keep their pixels); a tile is
 * `tile` px. An image's prediction is the mean over its evaluation tiles (up to `evalTiles` tiles of
 * the covering grid, evenly spread).
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages, ModelSpec, NamedTensor } from '@histofed/fl-core';
import {
  DEFAULT_AUGMENTATION,
  TILE_VIEW_HED_SIGMA,
  contrastivePair,
  cropTile,
  decodeScaledImage,
  gridOrigins,
  viewTiles,
  type BreakHisImage,
  type ScaledImage,
} from '@histofed/data';
import {
  balancedClassWeights,
  buildContrastiveModel,
  contrastiveStep,
  disposeContrastiveModel,
  getWeights,
  mixSeed,
  setWeights,
  shareImages,
  type TrainingPool,
} from '@histofed/ml';
import { federatedAverage, localContrastiveRound, type SslSite } from './federated';
import { predictFlat, scoreOutputs, type RowSet } from './heads';
import type { Score } from './summary';

export interface CnnTiles {
  readonly size: number;
  /** Per image path: the decoded image (native resolution), its evaluation tiles and its training crops. */
  readonly scaled: ReadonlyMap<string, ScaledImage>;
  readonly evalTiles: ReadonlyMap<string, { tiles: Float32Array; count: number }>;
  readonly crops: ReadonlyMap<string, { tiles: Float32Array; count: number }>;
}

/** `k` of `n` indices evenly spread (all when n <= k). */
export function spread(n: number, k: number): number[] {
  if (n <= k) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: k }, (_, i) => Math.round((i * (n - 1)) / (k - 1)));
}

/** Decodes every image and cuts its evaluation tiles and `crops` augmented training crops (the default recipe's view augmentation). */
export async function loadCnnTiles(images: readonly BreakHisImage[], o: { size: number; evalTiles: number; crops: number; log: (line: string) => void }): Promise<CnnTiles> {
  const t0 = Date.now();
  const scaled = new Map<string, ScaledImage>();
  const evalTiles = new Map<string, { tiles: Float32Array; count: number }>();
  const crops = new Map<string, { tiles: Float32Array; count: number }>();
  const per = o.size * o.size * 3;
  for (const img of images) {
    const s = await decodeScaledImage(img.path, { size: o.size, scale: 1 });
    scaled.set(img.path, s);
    const origins = gridOrigins(s.width, s.height, o.size);
    const pick = spread(origins.length, o.evalTiles);
    const tiles = new Float32Array(pick.length * per);
    pick.forEach((g, i) => cropTile(s, origins[g], o.size, tiles, i * per));
    evalTiles.set(img.path, { tiles, count: pick.length });
    crops.set(img.path, viewTiles(s, o.size, img.relativePath, { views: o.crops, seed: 17, augment: DEFAULT_AUGMENTATION, hedSigma: TILE_VIEW_HED_SIGMA }));
  }
  o.log(`cnn tiles: ${images.length} images decoded at native resolution, ${o.evalTiles} evaluation tiles and ${o.crops} training crops of ${o.size} px each, in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { size: o.size, scaled, evalTiles, crops };
}

/** Evaluation tiles of `images` as rows (x: the pixels, d = size*size*3). */
export function evalRows(t: CnnTiles, images: readonly BreakHisImage[]): RowSet {
  const per = t.size * t.size * 3;
  const parts = images.map((i) => t.evalTiles.get(i.path) ?? fail(i.path));
  const count = parts.reduce((n, p) => n + p.count, 0);
  const x = new Float32Array(count * per);
  const imageOf = new Int32Array(count);
  const labels = new Int32Array(count);
  let r = 0;
  parts.forEach((p, i) => {
    x.set(p.tiles, r * per);
    imageOf.fill(i, r, r + p.count);
    labels.fill(images[i].labelIndex, r, r + p.count);
    r += p.count;
  });
  return { x, d: per, count, labels, imageOf, imageLabels: Int32Array.from(images, (i) => i.labelIndex) };
}

function fail(p: string): never {
  throw new Error(`${p}: not decoded`);
}

export interface CnnSslRecipe {
  readonly spec: ModelSpec;
  readonly rounds: number;
  readonly localSteps: number;
  readonly batchSize: number;
  readonly learningRate: number;
  readonly tau: number;
}

/**
 * Federated NT-Xent of the CNN from random initialisation (seed): each site draws pairs of views of
 * its own images' tiles; FedAvg by image counts. Returns the classifier's weights (encoder
 * pretrained, heads as initialised) and the per-round mean losses.
 */
export async function cnnSsl(t: CnnTiles, sites: readonly (readonly BreakHisImage[])[], r: CnnSslRecipe, seed: number, log: (line: string) => void): Promise<{ classifier: NamedTensor[]; initial: NamedTensor[]; losses: number[] }> {
  const model = buildContrastiveModel(r.spec, seed, 64, 128);
  const s = t.size;
  try {
    const initial = getWeights(model.classifier);
    const sslSites: SslSite[] = sites.map((images, si) => ({
      count: images.length,
      train(global, round) {
        setWeights(model.projector, global);
        const b = Math.min(r.batchSize, images.length);
        const a = new Float32Array(b * s * s * 3);
        const bb = new Float32Array(b * s * s * 3);
        const plan = { count: images.length, batchSize: r.batchSize, steps: r.localSteps, learningRate: r.learningRate, orderSeed: mixSeed(seed, round * 1000 + si), randSeed: mixSeed(mixSeed(seed, 200 + si), round) };
        const loss = localContrastiveRound(plan, (items, optimizer, rand) => {
          items.forEach((item, i) => {
            const img = t.scaled.get(images[item].path) ?? fail(images[item].path);
            const p = contrastivePair(img, s, rand);
            a.set(p.a, i * s * s * 3);
            bb.set(p.b, i * s * s * 3);
          });
          const [ta, tb] = [tf.tensor4d(a, [b, s, s, 3]), tf.tensor4d(bb, [b, s, s, 3])];
          const value = contrastiveStep(model, optimizer, ta, tb, r.tau);
          tf.dispose([ta, tb]);
          return value;
        });
        return { weights: getWeights(model.projector), loss };
      },
    }));
    const t0 = Date.now();
    const result = await federatedAverage(getWeights(model.projector), sslSites, r.rounds);
    setWeights(model.projector, result.weights);
    log(`      cnn SSL: ${r.rounds} rounds in ${((Date.now() - t0) / 1000).toFixed(0)} s; NT-Xent by round ${result.losses.map((l) => l.toFixed(2)).join(' ')}`);
    return { classifier: getWeights(model.classifier), initial, losses: result.losses };
  } finally {
    disposeContrastiveModel(model);
  }
}

/** The classifier and a model of its pooled features (sharing its layers), built once and reused for every fold. */
export interface CnnEval {
  readonly classifier: tfl.LayersModel;
  readonly features: tfl.LayersModel;
}

export function cnnEval(classifier: tfl.LayersModel): CnnEval {
  return { classifier, features: tfl.model({ inputs: classifier.inputs, outputs: classifier.getLayer('gap').output as tfl.SymbolicTensor }) };
}

/** The `gap` features of evaluation rows under `weights`. */
export function cnnFeatures(e: CnnEval, weights: readonly NamedTensor[], rows: RowSet, size: number): RowSet {
  setWeights(e.classifier, weights);
  const x = predictFlat(e.features, rows.x, rows.count, [size, size, 3], 128);
  return { ...rows, x, d: x.length / rows.count };
}

export interface CnnFineTuneRecipe {
  readonly epochs: number;
  readonly minSteps: number;
  readonly batchSize: number;
  readonly learningRate: number;
}

/** Fine-tunes the whole classifier from `weights` on the labelled images' training crops; scores it on the test rows. */
export async function cnnFineTune(e: CnnEval, pool: TrainingPool, spec: ModelSpec, t: CnnTiles, weights: NamedTensor[], labelled: readonly BreakHisImage[], test: RowSet, r: CnnFineTuneRecipe, seed: number): Promise<Score & { loss: number }> {
  const per = t.size * t.size * 3;
  const parts = labelled.map((i) => t.crops.get(i.path) ?? fail(i.path));
  const count = parts.reduce((n, p) => n + p.count, 0);
  const images = new Float32Array(new SharedArrayBuffer(count * per * 4));
  const labels = new Int32Array(count);
  let at = 0;
  parts.forEach((p, i) => {
    images.set(p.tiles, at * per);
    labels.fill(labelled[i].labelIndex, at, at + p.count);
    at += p.count;
  });
  const data: LabeledImages = shareImages({ images, labels, count, imageSize: t.size });
  const epochs = Math.max(r.epochs, Math.ceil(r.minSteps / Math.ceil(count / r.batchSize)));
  const res = await pool.train(spec, weights, data, { epochs, batchSize: r.batchSize, learningRate: r.learningRate, proximalMu: 0, seed, classWeights: balancedClassWeights(labels, 2) });
  setWeights(e.classifier, res.weights);
  return { ...scoreOutputs(test, predictFlat(e.classifier, test.x, test.count, [t.size, t.size, 3], 128)), loss: res.loss };
}
