/**
 * Structured channel pruning of a compact CNN (se-cnn, attention-cnn, small-cnn): whole output
 * channels of conv blocks are removed, giving a smaller model of the same architecture whose spec
 * (options filters{n}, seUnits{n}: models.ts) describes it completely — every consumer rebuilds it
 * with buildModel(prunedSpec) and loads the pruned weights with setWeights.
 *
 * Removing channel c of block n slices, in the NamedTensor list ('<layer>/<weight>'):
 * - conv{n}/kernel [3, 3, cin, cout] output channels and conv{n}/bias;
 * - bn{n}/gamma, beta, moving_mean, moving_variance (batch normalization);
 * - se{n}_reduce/kernel [cout, hidden] rows; se{n}_expand/kernel [hidden, cout] columns and
 *   se{n}_expand/bias — the SE bottleneck keeps its `hidden` units (recorded as seUnits{n});
 * - conv{n+1}/kernel input channels, or after the last block fc1/kernel rows (global average
 *   pooling keeps one feature per channel);
 * - attention-cnn: sa{n}_conv reads the channel mean and max of the block's output, so its weights
 *   do not depend on the channel count; but the mean is over fewer channels after pruning, so its
 *   kernel's mean input is scaled by kept / before. A removed channel whose output was 0 (gate 0)
 *   then leaves the attention map unchanged (the max is over non-negative values).
 *
 * The pruned model computes exactly what the original computes when the removed channels feed
 * nothing downstream: their output 0 (e.g. a zero filter), or with SE gates their gate at 0 and
 * their se{n}_reduce row 0 (a closed gate alone still feeds the bottleneck through the squeeze).
 * Otherwise pruning is an approximation, to be fine-tuned.
 */
import type * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec, NamedTensor, WeightSet } from '@histofed/fl-core';
import { ValidationError, namedTensor } from '@histofed/fl-core';
import { getWeights } from '../weights-bridge';
import { convStructure, specWithFilters } from './conv-blocks';

/** Channels to keep per conv block: block number (1-based) -> channel indices; blocks not named keep every channel. */
export type ChannelKeep = Readonly<Record<number, readonly number[]>>;

export interface PrunedModel {
  /** The spec of the pruned model (the input spec itself when nothing was removed). */
  readonly spec: ModelSpec;
  /** Its weights, in the order of the input weights (= the order of buildModel(spec).weights). */
  readonly weights: NamedTensor[];
  /** The channels kept of each block (index block - 1), ascending, as indices of the input model. */
  readonly kept: number[][];
}

/** The keep lists of every block, checked against the spec: ValidationError naming `keep[block]`. */
export function resolveKeep(spec: ModelSpec, keep: ChannelKeep): number[][] {
  const s = convStructure(spec);
  for (const key of Object.keys(keep)) {
    const block = Number(key);
    if (!Number.isInteger(block) || block < 1 || block > s.blocks.length) {
      throw new ValidationError(`keep[${key}]: no conv block ${key} (the model has blocks 1..${s.blocks.length})`);
    }
  }
  return s.blocks.map((b) => {
    const list = keep[b.block];
    if (list === undefined) return Array.from({ length: b.filters }, (_, c) => c);
    if (list.length === 0) throw new ValidationError(`keep[${b.block}]: keeps no channel of conv${b.block} (keep at least one)`);
    const seen = new Set<number>();
    list.forEach((c, j) => {
      if (!Number.isInteger(c) || c < 0 || c >= b.filters) {
        throw new ValidationError(`keep[${b.block}][${j}]: channel ${c} out of range [0, ${b.filters}) of conv${b.block}`);
      }
      if (seen.has(c)) throw new ValidationError(`keep[${b.block}][${j}]: channel ${c} listed twice`);
      seen.add(c);
    });
    return [...list].sort((a, x) => a - x);
  });
}

/** `t` with only the indices `keep` along `axis` (row-major layout). */
function sliceAxis(t: NamedTensor, axis: number, keep: readonly number[]): NamedTensor {
  const shape = [...t.shape];
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const dim = shape[axis];
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(outer * keep.length * inner);
  for (let o = 0; o < outer; o++) {
    keep.forEach((k, j) => {
      const from = (o * dim + k) * inner;
      out.set(t.values.subarray(from, from + inner), (o * keep.length + j) * inner);
    });
  }
  shape[axis] = keep.length;
  return namedTensor(t.name, shape, out);
}

/**
 * Prunes `weights` (a model of `spec`, e.g. getWeights(model)) to the channels `keep` of each
 * block. Pure: the input is not changed, the output owns fresh arrays. Throws a ValidationError for
 * another kind, a bad keep list or weights that do not fit the spec.
 */
export function pruneWeights(spec: ModelSpec, weights: WeightSet, keep: ChannelKeep): PrunedModel {
  const s = convStructure(spec);
  const kept = resolveKeep(spec, keep);
  const byName = new Map(weights.map((t) => [t.name, t]));
  const expect = (name: string, axis: number, size: number) => {
    const t = byName.get(name);
    if (t === undefined) throw new ValidationError(`weights: no tensor "${name}" (a ${s.kind} of this spec has one)`);
    if (t.shape[axis] !== size) {
      throw new ValidationError(`weights: "${name}" has shape [${t.shape.join(', ')}], the spec implies ${size} along axis ${axis}`);
    }
  };
  // Each tensor's slices: [axis, keep] pairs, and the attention kernels' mean-input scale.
  const slices = new Map<string, [number, number[]][]>();
  const add = (name: string, axis: number, size: number, k: number[]) => {
    expect(name, axis, size);
    if (k.length < size) slices.set(name, [...(slices.get(name) ?? []), [axis, k]]);
  };
  const meanScale = new Map<string, number>();
  s.blocks.forEach((b, i) => {
    const k = kept[i];
    const n = b.block;
    add(`conv${n}/kernel`, 3, b.filters, k);
    if (!s.batchNorm) add(`conv${n}/bias`, 0, b.filters, k);
    if (s.batchNorm) for (const w of ['gamma', 'beta', 'moving_mean', 'moving_variance']) add(`bn${n}/${w}`, 0, b.filters, k);
    if (s.squeezeExcite) {
      add(`se${n}_reduce/kernel`, 0, b.filters, k);
      add(`se${n}_expand/kernel`, 1, b.filters, k);
      add(`se${n}_expand/bias`, 0, b.filters, k);
    }
    if (s.spatialAttention) {
      expect(`sa${n}_conv/kernel`, 2, 2);
      if (k.length < b.filters) meanScale.set(`sa${n}_conv/kernel`, k.length / b.filters);
    }
    if (i + 1 < s.blocks.length) add(`conv${n + 1}/kernel`, 2, b.filters, k);
    else add('fc1/kernel', 0, b.filters, k);
  });
  if (slices.size === 0) return { spec, weights: weights.map((t) => namedTensor(t.name, [...t.shape], new Float32Array(t.values))), kept };
  const out = weights.map((t) => {
    let r = namedTensor(t.name, [...t.shape], new Float32Array(t.values));
    for (const [axis, k] of slices.get(t.name) ?? []) r = sliceAxis(r, axis, k);
    const scale = meanScale.get(t.name);
    if (scale !== undefined) {
      // [k, k, 2, 1]: input channel 0 is the channel mean (ChannelPool), now over fewer channels.
      const v = r.values as Float32Array;
      for (let j = 0; j < v.length; j += 2) v[j] *= scale;
    }
    return r;
  });
  return { spec: specWithFilters(spec, kept.map((k) => k.length)), weights: out, kept };
}

/** pruneWeights of a model's current weights (trainable and batch-norm statistics). */
export function pruneModel(model: tfl.LayersModel, spec: ModelSpec, keep: ChannelKeep): PrunedModel {
  return pruneWeights(spec, getWeights(model), keep);
}
