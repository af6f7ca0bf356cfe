/**
 * The prunable structure of a compact CNN spec (models.ts kinds se-cnn, attention-cnn, small-cnn):
 * its conv blocks with their filter counts and SE bottleneck widths, as buildModel builds them.
 */
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { modelOptionsOf } from '../models';

export const PRUNABLE_KINDS = ['se-cnn', 'attention-cnn', 'small-cnn'] as const;

export interface ConvBlock {
  /** 1-based block number: layers conv{block}, bn{block}, se{block}_*, sa{block}_*. */
  readonly block: number;
  readonly filters: number;
  /** Units of the SE bottleneck (se{block}_reduce); null without SE gates (small-cnn). */
  readonly seUnits: number | null;
}

export interface ConvStructure {
  readonly kind: (typeof PRUNABLE_KINDS)[number];
  readonly blocks: readonly ConvBlock[];
  readonly batchNorm: boolean;
  /** se-cnn, attention-cnn: layers se{n}_reduce / se{n}_expand. */
  readonly squeezeExcite: boolean;
  /** attention-cnn: layers sa{n}_conv. */
  readonly spatialAttention: boolean;
}

/** The conv blocks of a compact CNN spec; a ValidationError naming model.kind for other kinds. */
export function convStructure(spec: ModelSpec): ConvStructure {
  const kind = spec.kind ?? 'se-cnn';
  if (!(PRUNABLE_KINDS as readonly string[]).includes(kind)) {
    throw new ValidationError(`model.kind: channel pruning needs a compact CNN (${PRUNABLE_KINDS.join(', ')}), got ${kind}`);
  }
  const o = modelOptionsOf(spec);
  const se = kind !== 'small-cnn';
  return {
    kind: kind as ConvStructure['kind'],
    blocks: o.filters.map((filters, i) => ({ block: i + 1, filters, seUnits: se ? o.seUnits[i] : null })),
    batchNorm: o.batchNorm,
    squeezeExcite: se,
    spatialAttention: kind === 'attention-cnn',
  };
}

/** Filters of each block (index block - 1). */
export function filterCounts(spec: ModelSpec): number[] {
  return convStructure(spec).blocks.map((b) => b.filters);
}

/**
 * The spec of the same model with `filters[i]` filters in block i + 1. Every block's filter count
 * and (with SE gates) its bottleneck width are written out (options filters{n}, seUnits{n}): the
 * bottleneck keeps its width (`seUnits`, default the spec's own), so pruning slices it exactly.
 */
export function specWithFilters(spec: ModelSpec, filters: readonly number[]): ModelSpec {
  const s = convStructure(spec);
  if (filters.length !== s.blocks.length) {
    throw new ValidationError(`filters: ${filters.length} counts for ${s.blocks.length} conv blocks`);
  }
  const options: Record<string, number> = { ...(spec.options ?? {}) };
  s.blocks.forEach((b, i) => {
    options[`filters${b.block}`] = filters[i];
    if (b.seUnits !== null) options[`seUnits${b.block}`] = b.seUnits;
  });
  const out: ModelSpec = { ...spec, options };
  convStructure(out); // validates the counts
  return out;
}
