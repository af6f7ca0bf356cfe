import { ValidationError } from './errors';
import { WeightSet, assertSameLayout, layoutOf, namedTensor, parameterCount } from './weights';

/**
 * A model update as one flat vector (tensors in layout order): `local - global`. Secure
 * aggregation masks and sums such vectors; shapes travel separately (both sides know the layout).
 */
export function flatDelta(local: WeightSet, global: WeightSet): Float32Array {
  assertSameLayout(layoutOf(global), layoutOf(local), 'update');
  const out = new Float32Array(parameterCount(global));
  let at = 0;
  for (let t = 0; t < global.length; t++) {
    const l = local[t].values;
    const g = global[t].values;
    for (let i = 0; i < g.length; i++) out[at + i] = l[i] - g[i];
    at += g.length;
  }
  return out;
}

/** `global + scale * delta`, where delta is a flat vector in global's layout order. */
export function applyFlatDelta(global: WeightSet, delta: ArrayLike<number>, scale = 1): WeightSet {
  if (delta.length !== parameterCount(global)) {
    throw new ValidationError(`flat update has ${delta.length} values, the model has ${parameterCount(global)} parameters`);
  }
  let at = 0;
  return global.map((t) => {
    const v = new Float32Array(t.values.length);
    for (let i = 0; i < v.length; i++) v[i] = t.values[i] + scale * delta[at + i];
    at += v.length;
    return namedTensor(t.name, t.shape, v);
  });
}

/** Scales `delta` in place so that its L2 norm is at most `maxNorm` (0 = no bound); returns the norm before. */
export function clipNorm(delta: Float32Array, maxNorm: number): number {
  let sq = 0;
  for (let i = 0; i < delta.length; i++) sq += delta[i] * delta[i];
  const norm = Math.sqrt(sq);
  if (maxNorm > 0 && norm > maxNorm) {
    const s = maxNorm / norm;
    for (let i = 0; i < delta.length; i++) delta[i] *= s;
  }
  return norm;
}
