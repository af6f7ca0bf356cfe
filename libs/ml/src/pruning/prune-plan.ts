/**
 * How much to prune: target filter counts per block for a fraction of the channels or of the
 * multiply-adds (describeModel), and the channels to keep for given counts and scores.
 *
 * Counts are rounded to a multiple of `multiple` (default 4): the wasm training kernels take their
 * SIMD fast paths for channel counts that are multiples of 4 (wasm-training-kernels.ts).
 */
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { buildModel, describeModel } from '../models';
import type { ChannelScores } from './channel-scores';
import { rankChannels } from './channel-scores';
import { convStructure, specWithFilters } from './conv-blocks';
import type { ChannelKeep } from './prune-model';

export const DEFAULT_CHANNEL_MULTIPLE = 4;

function checkFraction(fraction: number, what: string): void {
  if (!Number.isFinite(fraction) || fraction <= 0 || fraction > 1) throw new ValidationError(`${what}: must be in (0, 1], got ${fraction}`);
}

function checkMultiple(multiple: number): void {
  if (!Number.isInteger(multiple) || multiple < 1) throw new ValidationError(`multiple: must be a positive integer, got ${multiple}`);
}

/** `filters * fraction` rounded to a multiple (at least one multiple, at most `filters`; blocks smaller than a multiple round to 1). */
function roundedCount(filters: number, fraction: number, multiple: number): number {
  if (filters < multiple) return Math.max(1, Math.round(filters * fraction));
  return Math.min(filters, Math.max(multiple, Math.round((filters * fraction) / multiple) * multiple));
}

/** Filters per block at `fraction` of `spec`'s filters in every block (rounded to `multiple`). */
export function countsForChannelFraction(spec: ModelSpec, fraction: number, multiple = DEFAULT_CHANNEL_MULTIPLE): number[] {
  checkFraction(fraction, 'fraction');
  checkMultiple(multiple);
  return convStructure(spec).blocks.map((b) => roundedCount(b.filters, fraction, multiple));
}

const macCache = new Map<string, number>();

/** Multiply-adds of one forward pass of `spec`'s model (describeModel; builds the model once per spec). */
export function multiplyAddsOf(spec: ModelSpec): number {
  const key = JSON.stringify([spec.kind, spec.imageSize, spec.numClasses, spec.options ?? {}, spec.subtypeParents ?? [], spec.tiles ?? null]);
  const hit = macCache.get(key);
  if (hit !== undefined) return hit;
  const model = buildModel(spec, 1);
  try {
    const m = describeModel(model).multiplyAdds;
    macCache.set(key, m);
    return m;
  } finally {
    model.dispose();
  }
}

/**
 * Filters per block for at most `fraction` of `spec`'s multiply-adds: the largest uniform channel
 * fraction (every block scaled alike, counts rounded to `multiple`) whose model stays within the
 * budget. Returns the counts and the multiply-adds reached (and the unpruned spec's).
 */
export function countsForMultiplyAdds(
  spec: ModelSpec,
  fraction: number,
  multiple = DEFAULT_CHANNEL_MULTIPLE,
): { filters: number[]; multiplyAdds: number; reference: number } {
  checkFraction(fraction, 'fraction');
  checkMultiple(multiple);
  const reference = multiplyAddsOf(spec);
  const budget = fraction * reference;
  const at = (f: number) => {
    const filters = countsForChannelFraction(spec, f, multiple);
    return { filters, multiplyAdds: multiplyAddsOf(specWithFilters(spec, filters)) };
  };
  if (fraction === 1) return { filters: convStructure(spec).blocks.map((b) => b.filters), multiplyAdds: reference, reference };
  let lo = 0;
  let hi = 1;
  let best = at(1e-6); // the smallest model the rounding allows
  for (let k = 0; k < 24; k++) {
    const mid = (lo + hi) / 2;
    const r = at(mid);
    if (r.multiplyAdds <= budget) {
      lo = mid;
      best = r;
    } else {
      hi = mid;
    }
  }
  return { ...best, reference };
}

/**
 * The channels to keep: in block i the `counts[i]` channels of highest score (scores[i]; of equal
 * scores the lower index goes first: rankChannels), as ascending indices.
 */
export function keepTopChannels(scores: ChannelScores, counts: readonly number[]): ChannelKeep {
  if (scores.length !== counts.length) throw new ValidationError(`counts: ${counts.length} counts for ${scores.length} blocks of scores`);
  const keep: Record<number, number[]> = {};
  scores.forEach((s, i) => {
    const n = counts[i];
    if (!Number.isInteger(n) || n < 1 || n > s.length) throw new ValidationError(`counts[${i}]: must keep an integer in [1, ${s.length}] channels of block ${i + 1}, got ${n}`);
    keep[i + 1] = rankChannels(s).slice(s.length - n).sort((a, b) => a - b);
  });
  return keep;
}
