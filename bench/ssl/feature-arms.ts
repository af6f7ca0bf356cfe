/**
 * Arms imagenet and imagenetSsl of bench:ssl: the frozen ImageNet MobileNetV2 tile features (384
 * per 224 px tile: the covering grid plus 8 augmented training views per image, from the feature
 * cache), and a feature-space adapter pretrained on them by federated NT-Xent.
 *
 * SSL (libs/ml buildFeatureAdapter / featureContrastiveStep): a positive pair is two different
 * tiles of one image (two of its 20 cached rows: grid tiles and augmented views — different crops,
 * flips, turns, HSV and HED jitter), each through the adapter's input dropout; the other images of
 * the batch (one site's, distinct images) are the negatives. Features are standardized with the
 * fold's training tiles' statistics (label-free).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedTensor } from '@histofed/fl-core';
import type { BreakHisImage } from '@histofed/data';
import { adapterFeatures, buildFeatureAdapter, disposeFeatureAdapter, featureContrastiveStep, getWeights, mixSeed, setWeights } from '@histofed/ml';
import { slice, type DecodedSet } from '../accuracy/data-slices';
import { federatedAverage, localContrastiveRound, type SslSite } from './federated';
import type { RowSet } from './heads';

/** Rows (grid, plus the training views with `withViews`) of `images` as a RowSet. */
export function featureRows(decoded: DecodedSet, images: readonly BreakHisImage[], withViews: boolean): RowSet {
  const s = slice(decoded, images, withViews);
  if (s.imageOf === undefined || s.sampleShape === undefined) throw new Error('featureRows: not tile features');
  return { x: s.images, d: s.sampleShape[0], count: s.count, labels: s.labels, imageOf: s.imageOf, imageLabels: Int32Array.from(images, (i) => i.labelIndex) };
}

export interface FeatureSslRecipe {
  readonly units: readonly number[];
  readonly inputDropout: number;
  readonly rounds: number;
  /** Local NT-Xent steps per site and round. */
  readonly localSteps: number;
  /** Images per batch (at most the site's). */
  readonly batchSize: number;
  readonly learningRate: number;
  readonly tau: number;
}

/** Row indices of each image of `rows`. */
function rowsPerImage(rows: RowSet): number[][] {
  const out: number[][] = Array.from({ length: rows.imageLabels.length }, () => []);
  for (let r = 0; r < rows.count; r++) out[rows.imageOf[r]].push(r);
  return out;
}

/**
 * Federated NT-Xent of the adapter: every site trains on its own images' standardized tile rows;
 * FedAvg by image counts. Returns the adapter's weights (adapter1..., without the projection head)
 * and the per-round mean losses.
 */
export async function featureSsl(sites: readonly RowSet[], r: FeatureSslRecipe, seed: number): Promise<{ encoder: NamedTensor[]; losses: number[] }> {
  const d = sites[0].d;
  const adapter = buildFeatureAdapter(d, seed, { units: r.units, inputDropout: r.inputDropout });
  try {
    const sslSites: SslSite[] = sites.map((rows, si) => {
      const perImage = rowsPerImage(rows).filter((x) => x.length >= 2);
      return {
        count: perImage.length,
        train(global, round) {
          setWeights(adapter.projector, global);
          const b = Math.min(r.batchSize, perImage.length);
          const xa = new Float32Array(b * d);
          const xb = new Float32Array(b * d);
          const plan = { count: perImage.length, batchSize: r.batchSize, steps: r.localSteps, learningRate: r.learningRate, orderSeed: mixSeed(seed, round * 1000 + si), randSeed: mixSeed(mixSeed(seed, 100 + si), round) };
          const loss = localContrastiveRound(plan, (items, optimizer, rand) => {
            items.forEach((item, i) => {
              const own = perImage[item];
              const p = Math.floor(rand() * own.length);
              const q = (p + 1 + Math.floor(rand() * (own.length - 1))) % own.length;
              xa.set(rows.x.subarray(own[p] * d, (own[p] + 1) * d), i * d);
              xb.set(rows.x.subarray(own[q] * d, (own[q] + 1) * d), i * d);
            });
            const [ta, tb] = [tf.tensor2d(xa, [b, d]), tf.tensor2d(xb, [b, d])];
            const value = featureContrastiveStep(adapter, optimizer, ta, tb, r.tau);
            tf.dispose([ta, tb]);
            return value;
          });
          return { weights: getWeights(adapter.projector), loss };
        },
      };
    });
    const result = await federatedAverage(getWeights(adapter.projector), sslSites, r.rounds);
    const names = new Set(getWeights(adapter.encoder).map((t) => t.name));
    return { encoder: result.weights.filter((t) => names.has(t.name)), losses: result.losses };
  } finally {
    disposeFeatureAdapter(adapter);
  }
}

/** The pretrained adapter's representation of standardized rows. */
export function adapterRepresentation(encoder: readonly NamedTensor[], rows: RowSet, r: FeatureSslRecipe): RowSet {
  const adapter = buildFeatureAdapter(rows.d, 1, { units: r.units, inputDropout: r.inputDropout });
  try {
    setWeights(adapter.encoder, encoder);
    return { ...rows, x: adapterFeatures(adapter, rows.x, rows.count), d: adapter.width };
  } finally {
    disposeFeatureAdapter(adapter);
  }
}
