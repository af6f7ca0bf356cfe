import { Metrics, NamedTensor, ValidationError, WeightSet, assertSameLayout, layoutOf } from '@histofed/fl-core';

/**
 * Weighted mean of weight sets: sum_i (w_i / sum w) * x_i, accumulated in float64.
 * Every set must have the layout of the first; weights must be positive.
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
  return layout.map((spec, t) => {
    const acc = new Float64Array(sets[0][t].values.length);
    sets.forEach((s, i) => {
      const f = weights[i] / total;
      const v = s[t].values;
      for (let j = 0; j < v.length; j++) acc[j] += f * v[j];
    });
    return { name: spec.name, shape: [...spec.shape], values: Float32Array.from(acc) };
  });
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
