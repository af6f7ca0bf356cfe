/**
 * Channel importance of a compact CNN's conv blocks, for structured pruning (prune-model.ts):
 *
 * - SE gates: the mean over a site's images of each channel's squeeze-and-excitation gate (the
 *   sigmoid output of se{n}_expand). A channel the gate keeps near 0 on every image contributes
 *   little downstream. `seGateStatistics` is what a site computes and sends — the per-channel means
 *   and its number of images, nothing else; `aggregateGateStatistics` is the coordinator's side, a
 *   pure function (the image-weighted mean over sites, as a Flower Strategy aggregates metrics).
 * - Weight norm (the baseline, Li et al. 2017): the L1 norm of each output filter of conv{n}; with
 *   batch normalization times the channel's BN scale |gamma| / sqrt(moving_variance + epsilon),
 *   the factor the normalization applies to that filter's output.
 *
 * Scores are per block, index block - 1, one number per channel; higher = more important.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages, ModelSpec, WeightSet } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { dataRowShape, imageBatch } from '../batches';
import { convStructure } from './conv-blocks';

/** Per conv block (index block - 1), one score per channel. */
export type ChannelScores = readonly (readonly number[])[];

/** What a site reports: its mean SE gate per channel and block, over `images` images (or tile rows). */
export interface GateStatistics {
  readonly images: number;
  readonly gates: ChannelScores;
}

/** tfjs-layers' default batch-normalization epsilon (models.ts builds bn{n} with it). */
export const BATCH_NORM_EPSILON = 1e-3;

const probes = new WeakMap<tfl.LayersModel, tfl.LayersModel>();

/** A model sharing `model`'s layers that outputs every block's gate; cached, never disposed (it would release the shared weights). */
function gateProbe(model: tfl.LayersModel, blocks: number): tfl.LayersModel {
  const hit = probes.get(model);
  if (hit !== undefined) return hit;
  const outputs = Array.from({ length: blocks }, (_, i) => {
    try {
      return model.getLayer(`se${i + 1}_expand`).output as tfl.SymbolicTensor;
    } catch {
      throw new ValidationError(`model: no layer 'se${i + 1}_expand'; the model does not match its spec`);
    }
  });
  const probe = tfl.model({ name: `${model.name}_se_gates`, inputs: model.inputs, outputs });
  probes.set(model, probe);
  return probe;
}

/**
 * The mean SE gate of every channel of every block over `data`'s rows (inference mode). Only the
 * means and the count leave: a site's report.
 */
export function seGateStatistics(
  model: tfl.LayersModel,
  spec: ModelSpec,
  data: Pick<LabeledImages, 'images' | 'count' | 'imageSize' | 'sampleShape'>,
  options: { readonly batchSize?: number } = {},
): GateStatistics {
  const s = convStructure(spec);
  if (!s.squeezeExcite) throw new ValidationError(`model.kind: ${s.kind} has no SE gates; rank its channels by weight norm`);
  if (!Number.isInteger(data.count) || data.count < 1) throw new ValidationError(`data.count: gate statistics need at least one image, got ${data.count}`);
  const batchSize = options.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ValidationError(`batchSize: must be a positive integer, got ${batchSize}`);
  const probe = gateProbe(model, s.blocks.length);
  const shape = dataRowShape(data);
  const sums = s.blocks.map((b) => new Float64Array(b.filters));
  for (let start = 0; start < data.count; start += batchSize) {
    const end = Math.min(data.count, start + batchSize);
    const batchSums = tf.tidy(() => {
      const x = imageBatch(data.images, shape, start, end);
      const out = probe.predict(x) as tf.Tensor | tf.Tensor[];
      return (Array.isArray(out) ? out : [out]).map((g) => tf.sum(g, 0).dataSync() as Float32Array);
    });
    batchSums.forEach((v, i) => {
      if (v.length !== sums[i].length) {
        throw new ValidationError(`model: block ${i + 1} has ${v.length} gates, the spec says ${sums[i].length} filters`);
      }
      v.forEach((x, c) => (sums[i][c] += x));
    });
  }
  return { images: data.count, gates: sums.map((v) => Array.from(v, (x) => x / data.count)) };
}

/**
 * The sites' gate statistics combined: per channel the image-weighted mean of the sites' means
 * (= the mean over all their images), and the total count. Sites without images are skipped. Pure.
 */
export function aggregateGateStatistics(reports: readonly GateStatistics[]): GateStatistics {
  const used = reports.filter((r) => r.images > 0);
  if (used.length === 0) throw new ValidationError('reports: no site reported gate statistics over any image');
  const shape = used[0].gates.map((g) => g.length);
  reports.forEach((r, k) => {
    if (!Number.isInteger(r.images) || r.images < 0) throw new ValidationError(`reports[${k}].images: must be a non-negative integer, got ${r.images}`);
    if (r.images === 0) return;
    if (r.gates.length !== shape.length || r.gates.some((g, i) => g.length !== shape[i])) {
      throw new ValidationError(`reports[${k}].gates: blocks of [${r.gates.map((g) => g.length).join(', ')}] channels, expected [${shape.join(', ')}]`);
    }
    r.gates.forEach((g, i) =>
      g.forEach((x, c) => {
        if (!Number.isFinite(x)) throw new ValidationError(`reports[${k}].gates[${i}][${c}]: not a finite number (${x})`);
      }),
    );
  });
  const images = used.reduce((n, r) => n + r.images, 0);
  return {
    images,
    gates: shape.map((channels, i) =>
      Array.from({ length: channels }, (_, c) => used.reduce((sum, r) => sum + r.images * r.gates[i][c], 0) / images),
    ),
  };
}

/**
 * Weight-norm scores of every block's channels from the model's weights: the L1 norm of conv{n}'s
 * output filter c, times |gamma_c| / sqrt(moving_variance_c + epsilon) with batch normalization.
 */
export function weightNormScores(spec: ModelSpec, weights: WeightSet): number[][] {
  const s = convStructure(spec);
  const byName = new Map(weights.map((t) => [t.name, t]));
  const get = (name: string, size?: number) => {
    const t = byName.get(name);
    if (t === undefined) throw new ValidationError(`weights: no tensor "${name}"`);
    if (size !== undefined && t.values.length !== size) throw new ValidationError(`weights: "${name}" has ${t.values.length} values, the spec implies ${size}`);
    return t;
  };
  return s.blocks.map((b) => {
    const kernel = get(`conv${b.block}/kernel`);
    const cout = kernel.shape[kernel.shape.length - 1];
    if (cout !== b.filters) throw new ValidationError(`weights: "conv${b.block}/kernel" has ${cout} output channels, the spec's block ${b.block} has ${b.filters}`);
    const norms = new Array<number>(cout).fill(0);
    kernel.values.forEach((v, k) => (norms[k % cout] += Math.abs(v)));
    if (s.batchNorm) {
      const gamma = get(`bn${b.block}/gamma`, cout).values;
      const variance = get(`bn${b.block}/moving_variance`, cout).values;
      for (let c = 0; c < cout; c++) norms[c] *= Math.abs(gamma[c]) / Math.sqrt(variance[c] + BATCH_NORM_EPSILON);
    }
    return norms;
  });
}

/** Channel indices of one block from the least to the most important (ties: lower index first). */
export function rankChannels(scores: readonly number[]): number[] {
  return scores.map((_, c) => c).sort((a, b) => scores[a] - scores[b] || a - b);
}
