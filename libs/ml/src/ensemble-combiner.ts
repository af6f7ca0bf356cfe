/**
 * How an ensemble combines its members' image-level output rows (issue 16). The ensemble manifest's
 * `combine` field names the combiner:
 * - `'mean-probabilities'` (the default, and what every older manifest says): the unweighted mean;
 * - `{kind: 'weighted-mean', weights}`: one non-negative weight per member, summing to 1;
 * - `{kind: 'stacking', stage1, subtype?}`: a multinomial logistic regression (the meta-learner) on
 *   the members' log-probabilities, one per head: for the stage-1 block of K classes and M members,
 *   `softmax(intercept + coefficients . [log p_1(1..K), ..., log p_M(1..K)])` (coefficients K x M*K);
 *   likewise for the subtype block (S subtypes: S x M*S) when `subtype` is given, else the subtype
 *   block is the members' mean.
 * Every consumer (predict, evaluate, the central evaluation, the benchmarks) combines through
 * combineMembers, so one manifest reads the same everywhere. Fitting: weightedMeanNll scores
 * candidate weightings (numbers a site can report: NLL sums per candidate), stackingGradient gives
 * a head's summed NLL and its gradient (numbers a site can report for a federated fit); fitStacking
 * is the local fit on pooled rows (tests, benchmarks).
 */
import { z } from 'zod';
import { ValidationError } from '@histofed/fl-core';
import type { OutputLayout } from './evaluate';

/** Probabilities are clamped here before the log (float32 softmax outputs may be exactly 0). */
export const STACKING_EPS = 1e-6;
const WEIGHT_SUM_TOLERANCE = 1e-6;
const finite = z.number().finite();

const logisticHeadSchema = z
  .object({
    /** One row per output class, one column per (member, class) log-probability, member-major. */
    coefficients: z.array(z.array(finite).min(1)).min(2),
    intercept: z.array(finite).min(2),
  })
  .strict()
  .superRefine((h, ctx) => {
    if (h.coefficients.length !== h.intercept.length) {
      ctx.addIssue({ code: 'custom', message: `${h.coefficients.length} coefficient rows for ${h.intercept.length} intercepts`, path: ['coefficients'] });
    }
    const cols = h.coefficients[0]?.length ?? 0;
    if (h.coefficients.some((r) => r.length !== cols)) ctx.addIssue({ code: 'custom', message: 'coefficient rows of different lengths', path: ['coefficients'] });
  });
export type LogisticHead = z.infer<typeof logisticHeadSchema>;

const meanObjectSchema = z.object({ kind: z.literal('mean-probabilities') }).strict();

const weightedMeanSchema = z
  .object({
    kind: z.literal('weighted-mean'),
    /** One per member, in the manifest's member order: non-negative, summing to 1. */
    weights: z.array(finite.min(0, 'a weight must be non-negative')).min(1),
    /** How they were fitted, e.g. "federated: 3 sites, 84 validation images, 66 candidates". */
    fittedOn: z.string().min(1).max(500).optional(),
  })
  .strict()
  .refine((c) => Math.abs(c.weights.reduce((a, b) => a + b, 0) - 1) <= WEIGHT_SUM_TOLERANCE, {
    message: 'the weights must sum to 1',
    path: ['weights'],
  });

const stackingSchema = z
  .object({
    kind: z.literal('stacking'),
    stage1: logisticHeadSchema,
    subtype: logisticHeadSchema.optional(),
    fittedOn: z.string().min(1).max(500).optional(),
  })
  .strict();

export const combinerSchema = z.union([z.literal('mean-probabilities'), z.discriminatedUnion('kind', [meanObjectSchema, weightedMeanSchema, stackingSchema])]);
export type EnsembleCombiner = z.infer<typeof combinerSchema>;
export type WeightedMeanCombiner = z.infer<typeof weightedMeanSchema>;
export type StackingCombiner = z.infer<typeof stackingSchema>;

/** The combiner's name: 'mean-probabilities', 'weighted-mean' or 'stacking'. */
export function combinerKind(c: EnsembleCombiner): 'mean-probabilities' | 'weighted-mean' | 'stacking' {
  return typeof c === 'string' ? c : c.kind;
}

/**
 * Why `combiner` cannot combine `members` members (of `layout`, when given), or null: a weight per
 * member, M*K coefficient columns for K classes, and with a layout, K (and S) rows.
 */
export function combinerProblem(combiner: EnsembleCombiner, members: number, layout?: OutputLayout): string | null {
  if (typeof combiner === 'string' || combiner.kind === 'mean-probabilities') return null;
  if (combiner.kind === 'weighted-mean') {
    return combiner.weights.length === members ? null : `${combiner.weights.length} weights for ${members} members`;
  }
  const heads: [string, LogisticHead | undefined, number | undefined][] = [
    ['stage1', combiner.stage1, layout?.numClasses],
    ['subtype', combiner.subtype, layout ? (layout.subtypeParents?.length ?? 0) : undefined],
  ];
  for (const [name, head, classes] of heads) {
    if (!head) continue;
    const rows = head.intercept.length;
    if (classes !== undefined && rows !== classes) return `stacking ${name}: ${rows} output classes, the members have ${classes}`;
    const cols = head.coefficients[0].length;
    if (cols !== members * rows) return `stacking ${name}: ${cols} coefficient columns, ${members} members of ${rows} classes need ${members * rows}`;
  }
  return null;
}

function widthOf(layout: OutputLayout): number {
  return layout.numClasses + (layout.subtypeParents?.length ?? 0);
}

function checkRows(rows: readonly Float32Array[], layout: OutputLayout, what: string): number {
  if (rows.length === 0) throw new ValidationError(`${what}: no member rows given`);
  const len = rows[0].length;
  rows.forEach((r, i) => {
    if (r.length !== len) throw new ValidationError(`${what}: member ${i} has ${r.length} values, member 0 has ${len}`);
  });
  const width = widthOf(layout);
  if (len % width !== 0) throw new ValidationError(`${what}: ${len} values are not rows of width ${width}`);
  return len / width;
}

/** Applies one logistic head to `n` rows: writes softmax(b + W . log p) into `out` at `offset` of each row. */
function applyHead(rows: readonly Float32Array[], head: LogisticHead, n: number, width: number, offset: number, k: number, out: Float32Array): void {
  const m = rows.length;
  const x = new Float64Array(m * k);
  const z = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < m; a++) for (let j = 0; j < k; j++) x[a * k + j] = Math.log(Math.max(rows[a][i * width + offset + j], STACKING_EPS));
    let max = -Infinity;
    for (let c = 0; c < k; c++) {
      const w = head.coefficients[c];
      let s = head.intercept[c];
      for (let f = 0; f < x.length; f++) s += w[f] * x[f];
      z[c] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let c = 0; c < k; c++) sum += (z[c] = Math.exp(z[c] - max));
    for (let c = 0; c < k; c++) out[i * width + offset + c] = z[c] / sum;
  }
}

/**
 * The ensemble's output rows from its members' rows (one array per member, count x width each, in
 * the manifest's member order; stage-1 block then the subtype block). Both blocks of the result are
 * distributions. Throws ValidationError when the rows or the combiner do not fit the members.
 */
export function combineMembers(rows: readonly Float32Array[], layout: OutputLayout, combiner: EnsembleCombiner = 'mean-probabilities'): Float32Array {
  const n = checkRows(rows, layout, 'combineMembers');
  const problem = combinerProblem(combiner, rows.length, layout);
  if (problem) throw new ValidationError(`combineMembers: ${problem}`);
  const len = rows[0].length;
  const kind = combinerKind(combiner);
  const weights =
    kind === 'weighted-mean' ? (combiner as WeightedMeanCombiner).weights : rows.map(() => 1 / rows.length);
  const out = new Float32Array(len);
  if (rows.length === 1 && kind !== 'stacking') return Float32Array.from(rows[0]);
  rows.forEach((r, a) => {
    const w = weights[a];
    if (w === 0) return;
    for (let j = 0; j < len; j++) out[j] += w * r[j];
  });
  if (kind === 'stacking') {
    const s = combiner as StackingCombiner;
    const width = widthOf(layout);
    applyHead(rows, s.stage1, n, width, 0, layout.numClasses, out);
    if (s.subtype) applyHead(rows, s.subtype, n, width, layout.numClasses, layout.subtypeParents!.length, out);
  }
  return out;
}

// ---- fitting: weighted mean -----------------------------------------------------------------

/**
 * Candidate weightings of `members` members: the simplex grid of step 1/`steps` (every weighting
 * whose weights are multiples of 1/steps), which holds the uniform mean when `steps` is a multiple
 * of `members`, each member alone, and every pair. At most `max` candidates: `steps` is lowered
 * until the grid fits (the uniform mean is always added).
 */
export function weightingCandidates(members: number, steps = 10, max = 300): number[][] {
  if (!Number.isInteger(members) || members < 1) throw new ValidationError(`weightingCandidates: ${members} members`);
  const count = (s: number) => binomial(s + members - 1, members - 1);
  let s = Math.max(1, Math.floor(steps));
  while (s > 1 && count(s) > max - 1) s--;
  const out: number[][] = [];
  const walk = (prefix: number[], left: number) => {
    if (prefix.length === members - 1) {
      out.push([...prefix, left].map((v) => v / s));
      return;
    }
    for (let v = left; v >= 0; v--) walk([...prefix, v], left - v);
  };
  walk([], s);
  const uniform = Array.from({ length: members }, () => 1 / members);
  if (!out.some((c) => c.every((v, i) => Math.abs(v - uniform[i]) < 1e-9))) out.push(uniform);
  return out;
}

function binomial(n: number, k: number): number {
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
  return Math.round(r);
}

/** Summed NLLs of one head for candidate weightings, and the rows counted. */
export interface WeightingNll {
  readonly nll: readonly number[];
  readonly count: number;
}

/**
 * For each candidate weighting, the summed NLL of `labels` under the weighted mean of the members'
 * rows, for the stage-1 block (labels: class indices) or the subtype block (labels: subtype
 * indices, negative ones skipped): the numbers a site reports about its validation images.
 */
export function weightedMeanNll(
  rows: readonly Float32Array[],
  labels: ArrayLike<number>,
  layout: OutputLayout,
  candidates: readonly (readonly number[])[],
  head: 'stage1' | 'subtype' = 'stage1',
): WeightingNll {
  const n = checkRows(rows, layout, 'weightedMeanNll');
  if (labels.length !== n) throw new ValidationError(`weightedMeanNll: ${labels.length} labels for ${n} rows`);
  const width = widthOf(layout);
  const offset = head === 'stage1' ? 0 : layout.numClasses;
  const k = head === 'stage1' ? layout.numClasses : (layout.subtypeParents?.length ?? 0);
  if (k === 0) throw new ValidationError('weightedMeanNll: the model has no subtype head');
  candidates.forEach((c, i) => {
    if (c.length !== rows.length) throw new ValidationError(`weightedMeanNll: candidate ${i} has ${c.length} weights for ${rows.length} members`);
  });
  const nll = new Array<number>(candidates.length).fill(0);
  let count = 0;
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (y < 0) continue;
    if (!Number.isInteger(y) || y >= k) throw new ValidationError(`weightedMeanNll: label ${y} of row ${i} is not a class of ${k}`);
    count++;
    candidates.forEach((c, ci) => {
      let p = 0;
      for (let a = 0; a < rows.length; a++) p += c[a] * rows[a][i * width + offset + y];
      nll[ci] -= Math.log(Math.max(p, 1e-12));
    });
  }
  return { nll, count };
}

/** The candidate with the smallest summed NLL (ties: the earlier one), with its weights normalized to sum to 1. */
export function chooseWeighting(candidates: readonly (readonly number[])[], nll: readonly number[]): { index: number; weights: number[] } {
  if (candidates.length === 0 || nll.length !== candidates.length) throw new ValidationError(`chooseWeighting: ${nll.length} NLL sums for ${candidates.length} candidates`);
  let best = 0;
  for (let i = 1; i < nll.length; i++) if (nll[i] < nll[best]) best = i;
  const sum = candidates[best].reduce((a, b) => a + b, 0);
  return { index: best, weights: candidates[best].map((w) => w / sum) };
}

/**
 * The weight of every ensemble member from the weights fitted over the shared ones (those every
 * site can score). Members the other sites cannot score (personalized models, 'global@<site>')
 * keep the mean's share: with M members of which G are shared, each unshared member weighs 1/M as
 * in the unweighted mean, and the shared members split the remaining G/M in the fitted
 * proportions. Without unshared members these are the fitted weights themselves. Sums to 1.
 */
export function spreadFittedWeights(members: readonly string[], shared: readonly string[], fitted: readonly number[]): number[] {
  if (fitted.length !== shared.length) throw new ValidationError(`spreadFittedWeights: ${fitted.length} fitted weights for ${shared.length} shared members`);
  const missing = shared.find((id) => !members.includes(id));
  if (missing !== undefined) throw new ValidationError(`spreadFittedWeights: shared member ${missing} is not a member`);
  const m = members.length;
  const share = shared.length / m;
  const weights = members.map((id) => {
    const i = shared.indexOf(id);
    return i >= 0 ? share * fitted[i] : 1 / m;
  });
  const sum = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => w / sum);
}

// ---- fitting: stacking ------------------------------------------------------------------------

/** A head's summed NLL (plus nothing for the L2 term) and its gradient, over the rows counted. */
export interface StackingGradient {
  readonly nll: number;
  readonly count: number;
  readonly coefficients: number[][];
  readonly intercept: number[];
}

/**
 * Summed NLL of `labels` under the logistic head `params` applied to the members' rows (stage-1 or
 * subtype block; negative labels skipped), and its gradient with respect to the head's parameters:
 * sums over rows, so the sites' answers add up to the pooled gradient.
 */
export function stackingGradient(
  rows: readonly Float32Array[],
  labels: ArrayLike<number>,
  layout: OutputLayout,
  params: LogisticHead,
  head: 'stage1' | 'subtype' = 'stage1',
): StackingGradient {
  const n = checkRows(rows, layout, 'stackingGradient');
  if (labels.length !== n) throw new ValidationError(`stackingGradient: ${labels.length} labels for ${n} rows`);
  const width = widthOf(layout);
  const offset = head === 'stage1' ? 0 : layout.numClasses;
  const k = head === 'stage1' ? layout.numClasses : (layout.subtypeParents?.length ?? 0);
  const m = rows.length;
  const features = m * k;
  if (params.intercept.length !== k || params.coefficients.some((r) => r.length !== features)) {
    throw new ValidationError(`stackingGradient: the ${head} head must be ${k} x ${features}`);
  }
  const gW = Array.from({ length: k }, () => new Array<number>(features).fill(0));
  const gB = new Array<number>(k).fill(0);
  const x = new Float64Array(features);
  const z = new Float64Array(k);
  let nll = 0;
  let count = 0;
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (y < 0) continue;
    if (!Number.isInteger(y) || y >= k) throw new ValidationError(`stackingGradient: label ${y} of row ${i} is not a class of ${k}`);
    count++;
    for (let a = 0; a < m; a++) for (let j = 0; j < k; j++) x[a * k + j] = Math.log(Math.max(rows[a][i * width + offset + j], STACKING_EPS));
    let max = -Infinity;
    for (let c = 0; c < k; c++) {
      let s = params.intercept[c];
      const w = params.coefficients[c];
      for (let f = 0; f < features; f++) s += w[f] * x[f];
      z[c] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let c = 0; c < k; c++) sum += (z[c] = Math.exp(z[c] - max));
    for (let c = 0; c < k; c++) {
      const p = z[c] / sum;
      const d = p - (c === y ? 1 : 0);
      if (c === y) nll -= Math.log(Math.max(p, 1e-300));
      gB[c] += d;
      const g = gW[c];
      for (let f = 0; f < features; f++) g[f] += d * x[f];
    }
  }
  return { nll, count, coefficients: gW, intercept: gB };
}

/** The starting point of a fit: the members' mean of log-probabilities (each member's coefficient 1/M on its own class). */
export function initialStackingHead(members: number, classes: number): LogisticHead {
  return {
    coefficients: Array.from({ length: classes }, (_, c) => Array.from({ length: members * classes }, (_, f) => (f % classes === c ? 1 / members : 0))),
    intercept: new Array<number>(classes).fill(0),
  };
}

export interface StackingFitOptions {
  /** Gradient steps (default 500). */
  readonly iterations?: number;
  /** Adam step size (default 0.05). */
  readonly learningRate?: number;
  /** L2 penalty on the coefficients per counted row (default 1e-3). */
  readonly l2?: number;
}

/**
 * One step of a head's fit from a (possibly summed over sites) gradient: Adam on the mean NLL plus
 * the L2 penalty. `state` carries the moments between steps (start with {}).
 */
export function stackingStep(
  params: LogisticHead,
  gradient: Pick<StackingGradient, 'coefficients' | 'intercept' | 'count'>,
  state: { t?: number; m?: number[]; v?: number[] },
  options: StackingFitOptions = {},
): LogisticHead {
  const lr = options.learningRate ?? 0.05;
  const l2 = options.l2 ?? 1e-3;
  const k = params.intercept.length;
  const f = params.coefficients[0].length;
  const flat = [...params.coefficients.flat(), ...params.intercept];
  const count = Math.max(gradient.count, 1);
  const g = [
    ...gradient.coefficients.flatMap((row, c) => row.map((v, j) => v / count + l2 * params.coefficients[c][j])),
    ...gradient.intercept.map((v) => v / count),
  ];
  state.t = (state.t ?? 0) + 1;
  state.m ??= new Array<number>(g.length).fill(0);
  state.v ??= new Array<number>(g.length).fill(0);
  const b1 = 0.9;
  const b2 = 0.999;
  for (let i = 0; i < g.length; i++) {
    state.m[i] = b1 * state.m[i] + (1 - b1) * g[i];
    state.v[i] = b2 * state.v[i] + (1 - b2) * g[i] * g[i];
    const mh = state.m[i] / (1 - b1 ** state.t);
    const vh = state.v[i] / (1 - b2 ** state.t);
    flat[i] -= (lr * mh) / (Math.sqrt(vh) + 1e-8);
  }
  return {
    coefficients: Array.from({ length: k }, (_, c) => flat.slice(c * f, (c + 1) * f)),
    intercept: flat.slice(k * f),
  };
}

/** Fits one logistic head on pooled rows (full-batch Adam from the mean-of-logs start). */
export function fitStackingHead(
  rows: readonly Float32Array[],
  labels: ArrayLike<number>,
  layout: OutputLayout,
  head: 'stage1' | 'subtype' = 'stage1',
  options: StackingFitOptions = {},
): LogisticHead {
  const k = head === 'stage1' ? layout.numClasses : (layout.subtypeParents?.length ?? 0);
  let params = initialStackingHead(rows.length, k);
  const state = {};
  for (let it = 0; it < (options.iterations ?? 500); it++) params = stackingStep(params, stackingGradient(rows, labels, layout, params, head), state, options);
  return params;
}

/**
 * A stacking combiner fitted on pooled rows: the stage-1 head on `labels`, and with `subtypeLabels`
 * (negative: none) on a two-stage layout, the subtype head.
 */
export function fitStacking(
  rows: readonly Float32Array[],
  labels: ArrayLike<number>,
  layout: OutputLayout,
  options: StackingFitOptions & { readonly subtypeLabels?: ArrayLike<number>; readonly fittedOn?: string } = {},
): StackingCombiner {
  const stage1 = fitStackingHead(rows, labels, layout, 'stage1', options);
  const subtype =
    options.subtypeLabels && (layout.subtypeParents?.length ?? 0) > 0 ? fitStackingHead(rows, options.subtypeLabels, layout, 'subtype', options) : undefined;
  return { kind: 'stacking', stage1, ...(subtype ? { subtype } : {}), ...(options.fittedOn ? { fittedOn: options.fittedOn } : {}) };
}
