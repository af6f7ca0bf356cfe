import { Metrics, NamedTensor, ValidationError, WeightSet, assertSameLayout, layoutOf } from '@histofed/fl-core';

/** Coordinates per block of weightedAverage: the float64 accumulator block (32 KB) stays in L1/L2. */
const AVERAGE_BLOCK = 4096;

/**
 * Weighted mean of weight sets: sum_i (w_i / sum w) * x_i, accumulated in float64.
 * Every set must have the layout of the first; weights must be positive.
 *
 * Per coordinate the arithmetic is exactly acc = 0; acc += f_i * x_i[j] for i = 0, 1, ... in set
 * order, then rounded to float32 once. The coordinates are processed in blocks so that the float64
 * accumulator stays in cache while the sites stream through it (one pass over each site's values
 * instead of a read-modify-write of a full-size float64 array per site).
 */
export function weightedAverage(sets: readonly WeightSet[], weights: readonly number[]): NamedTensor[] {
  if (sets.length === 0) throw new ValidationError('weighted average of zero weight sets');
  if (sets.length !== weights.length) throw new ValidationError('one weight per weight set is required');
  if (weights.some((w) => !(w > 0) || !Number.isFinite(w))) {
    throw new ValidationError('averaging weights must be positive finite numbers');
  }
  const layout = layoutOf(sets[0]);
  sets.forEach((s, i) => assertSameLayout(layout, layoutOf(s), `weight set ${i}`));
  const total = weights.reduce((a, b) => a + b, 0);
  const factors = weights.map((w) => w / total);
  const acc = new Float64Array(AVERAGE_BLOCK);
  return layout.map((spec, t) => {
    const columns = sets.map((s) => s[t].values);
    const length = columns[0].length;
    const out = new Float32Array(length);
    for (let start = 0; start < length; start += AVERAGE_BLOCK) {
      const m = Math.min(AVERAGE_BLOCK, length - start);
      acc.fill(0, 0, m);
      let i = 0;
      for (; i + 8 <= columns.length; i += 8) addScaled8(acc, columns, factors, i, start, m);
      for (; i + 4 <= columns.length; i += 4) {
        addScaled4(acc, columns[i], columns[i + 1], columns[i + 2], columns[i + 3], start, m, factors[i], factors[i + 1], factors[i + 2], factors[i + 3]);
      }
      for (; i < columns.length; i++) addScaled(acc, columns[i], start, m, factors[i]);
      for (let j = 0; j < m; j++) out[start + j] = acc[j];
    }
    return { name: spec.name, shape: [...spec.shape], values: out };
  });
}

/**
 * Eight sites at once (columns[i .. i+7]), in order: the additions happen in the same sequence as
 * eight addScaled calls (JavaScript never fuses a multiply and an add), with an eighth of the
 * accumulator traffic.
 */
function addScaled8(acc: Float64Array, columns: readonly Float32Array[], f: readonly number[], i: number, start: number, m: number): void {
  const v0 = columns[i];
  const v1 = columns[i + 1];
  const v2 = columns[i + 2];
  const v3 = columns[i + 3];
  const v4 = columns[i + 4];
  const v5 = columns[i + 5];
  const v6 = columns[i + 6];
  const v7 = columns[i + 7];
  const f0 = f[i];
  const f1 = f[i + 1];
  const f2 = f[i + 2];
  const f3 = f[i + 3];
  const f4 = f[i + 4];
  const f5 = f[i + 5];
  const f6 = f[i + 6];
  const f7 = f[i + 7];
  for (let j = 0; j < m; j++) {
    const k = start + j;
    let a = acc[j];
    a += f0 * v0[k];
    a += f1 * v1[k];
    a += f2 * v2[k];
    a += f3 * v3[k];
    a += f4 * v4[k];
    a += f5 * v5[k];
    a += f6 * v6[k];
    a += f7 * v7[k];
    acc[j] = a;
  }
}

/** Four sites at once, in order, like addScaled8. */
function addScaled4(
  acc: Float64Array,
  v0: Float32Array,
  v1: Float32Array,
  v2: Float32Array,
  v3: Float32Array,
  start: number,
  m: number,
  f0: number,
  f1: number,
  f2: number,
  f3: number,
): void {
  for (let j = 0; j < m; j++) {
    const k = start + j;
    let a = acc[j];
    a += f0 * v0[k];
    a += f1 * v1[k];
    a += f2 * v2[k];
    a += f3 * v3[k];
    acc[j] = a;
  }
}

/** acc[j] += f * v[start + j] for j < m. */
function addScaled(acc: Float64Array, v: Float32Array, start: number, m: number, f: number): void {
  for (let j = 0; j < m; j++) acc[j] += f * v[start + j];
}

/** Sample-weighted mean of each metric present in every result. */
export function weightedMetrics(results: readonly { numSamples: number; metrics: Metrics }[]): Metrics {
  if (results.length === 0) return {};
  const names = Object.keys(results[0].metrics).filter((k) => results.every((r) => k in r.metrics));
  const total = results.reduce((n, r) => n + r.numSamples, 0);
  const out: Metrics = {};
  for (const k of names) out[k] = results.reduce((s, r) => s + r.metrics[k] * r.numSamples, 0) / total;
  return out;
}

/**
 * Checks what every strategy needs before combining: at least one result, and every site's
 * weights with the layout (names, order, shapes) of the global model. Errors name the strategy,
 * the site and the tensor.
 */
export function assertResultsMatchGlobal(
  strategy: string,
  global: WeightSet,
  results: readonly { siteId: string; weights: WeightSet }[],
): void {
  if (results.length === 0) throw new ValidationError(`${strategy}: no results to aggregate`);
  const layout = layoutOf(global);
  for (const r of results) assertSameLayout(layout, layoutOf(r.weights), `${strategy}: site "${r.siteId}"`);
}
