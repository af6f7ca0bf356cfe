/**
 * Temperature scaling (Guo et al. 2017) of image-level output rows. The models end in softmax, so a
 * head's probabilities p are rescaled as softmax(log p / T): T > 1 softens over-confident outputs,
 * T < 1 sharpens, the predicted class never changes. Fitting needs only, per candidate T, the summed
 * negative log-likelihood of the labelled rows and their count: numbers a site can report without
 * any image or probability leaving it; the coordinator adds the sites' sums and takes the smallest.
 */
import { ValidationError } from '@histofed/fl-core';
import type { OutputLayout } from '../evaluate';
import { MAX_TEMPERATURE } from './model-metadata';

/** The default grid: 0.25 to 8, 1 included (31 values, log-spaced in steps of 2^(1/6)). */
export const DEFAULT_TEMPERATURE_GRID: readonly number[] = Array.from({ length: 31 }, (_, i) => Number((2 ** ((i - 12) / 6)).toFixed(6)));

const EPS = 1e-12;

/** Rescales `k` probabilities in place of `out` (from `p`, both at `offset`) by temperature `t`. */
function scaleBlock(p: ArrayLike<number>, out: Float32Array, offset: number, k: number, t: number): void {
  let max = -Infinity;
  const logits = new Float64Array(k);
  for (let c = 0; c < k; c++) {
    logits[c] = Math.log(Math.max(p[offset + c], EPS)) / t;
    if (logits[c] > max) max = logits[c];
  }
  let sum = 0;
  for (let c = 0; c < k; c++) {
    logits[c] = Math.exp(logits[c] - max);
    sum += logits[c];
  }
  for (let c = 0; c < k; c++) out[offset + c] = logits[c] / sum;
}

function checkTemperature(name: string, t: number): void {
  if (!(Number.isFinite(t) && t > 0 && t <= MAX_TEMPERATURE)) throw new ValidationError(`${name}: a temperature must be in (0, ${MAX_TEMPERATURE}], got ${t}`);
}

function widthOf(layout: OutputLayout): number {
  return layout.numClasses + (layout.subtypeParents?.length ?? 0);
}

/**
 * Output rows (count x width, stage-1 block then the subtype block) with each head rescaled by its
 * temperature (`subtype` defaults to 1: unchanged). Returns a new array.
 */
export function applyTemperature(rows: Float32Array, layout: OutputLayout, t: { readonly stage1: number; readonly subtype?: number }): Float32Array {
  const width = widthOf(layout);
  if (rows.length % width !== 0) throw new ValidationError(`applyTemperature: ${rows.length} values are not rows of width ${width}`);
  checkTemperature('stage1', t.stage1);
  if (t.subtype !== undefined) checkTemperature('subtype', t.subtype);
  const out = Float32Array.from(rows);
  const k = layout.numClasses;
  const s = layout.subtypeParents?.length ?? 0;
  for (let i = 0; i < rows.length; i += width) {
    if (t.stage1 !== 1) scaleBlock(rows, out, i, k, t.stage1);
    if (s > 0 && t.subtype !== undefined && t.subtype !== 1) scaleBlock(rows, out, i + k, s, t.subtype);
  }
  return out;
}

/** Summed negative log-likelihoods of one head for each temperature of a grid, and the rows counted. */
export interface TemperatureNll {
  readonly grid: readonly number[];
  /** Sum over rows of -log p_T(label), one per grid value. */
  readonly nll: readonly number[];
  readonly count: number;
}

/**
 * For each temperature of `grid`, the summed NLL of `labels` under rows rescaled by it, for one head:
 * the stage-1 block (`head` 'stage1') or the subtype block ('subtype': labels are subtype indices;
 * rows with a negative label are skipped).
 */
export function temperatureNll(
  rows: Float32Array,
  labels: ArrayLike<number>,
  layout: OutputLayout,
  head: 'stage1' | 'subtype' = 'stage1',
  grid: readonly number[] = DEFAULT_TEMPERATURE_GRID,
): TemperatureNll {
  const width = widthOf(layout);
  const count = rows.length / width;
  if (!Number.isInteger(count)) throw new ValidationError(`temperatureNll: ${rows.length} values are not rows of width ${width}`);
  if (labels.length !== count) throw new ValidationError(`temperatureNll: ${labels.length} labels for ${count} rows`);
  if (grid.length === 0) throw new ValidationError('temperatureNll: the grid is empty');
  grid.forEach((t, i) => checkTemperature(`grid[${i}]`, t));
  const k = head === 'stage1' ? layout.numClasses : (layout.subtypeParents?.length ?? 0);
  if (k < 2) throw new ValidationError(`temperatureNll: the model has no ${head} head`);
  const offset = head === 'stage1' ? 0 : layout.numClasses;
  const nll = new Array<number>(grid.length).fill(0);
  const block = new Float32Array(k);
  let used = 0;
  for (let i = 0; i < count; i++) {
    const y = labels[i];
    if (y < 0) continue;
    if (!Number.isInteger(y) || y >= k) throw new ValidationError(`temperatureNll: label ${y} of row ${i} is not a class of the ${head} head (0..${k - 1})`);
    used++;
    const p = rows.subarray(i * width + offset, i * width + offset + k);
    grid.forEach((t, g) => {
      scaleBlock(p, block, 0, k, t);
      nll[g] -= Math.log(Math.max(block[y], EPS));
    });
  }
  return { grid: [...grid], nll, count: used };
}

/**
 * Adds several parties' NLL sums (same grid) and picks the temperature with the smallest mean NLL
 * (ties: the one closest to 1). Returns null when no row was counted.
 */
export function chooseTemperature(parts: readonly TemperatureNll[]): { temperature: number; meanNll: number; meanNllAtOne: number | null; count: number } | null {
  if (parts.length === 0) return null;
  const grid = parts[0].grid;
  for (const [i, p] of parts.entries()) {
    if (p.grid.length !== grid.length || p.grid.some((t, g) => t !== grid[g])) throw new ValidationError(`chooseTemperature: part ${i} uses another grid`);
    if (p.nll.length !== grid.length) throw new ValidationError(`chooseTemperature: part ${i} has ${p.nll.length} sums for ${grid.length} temperatures`);
  }
  const count = parts.reduce((n, p) => n + p.count, 0);
  if (count === 0) return null;
  const total = grid.map((_, g) => parts.reduce((s, p) => s + p.nll[g], 0));
  let best = 0;
  for (let g = 1; g < grid.length; g++) {
    const better = total[g] < total[best] - 1e-12 || (Math.abs(total[g] - total[best]) <= 1e-12 && Math.abs(Math.log(grid[g])) < Math.abs(Math.log(grid[best])));
    if (better) best = g;
  }
  const one = grid.findIndex((t) => t === 1);
  return { temperature: grid[best], meanNll: total[best] / count, meanNllAtOne: one >= 0 ? total[one] / count : null, count };
}
