import { TensorSpec, WeightSet, assertSameLayout, findNonFinite, l2Distance, layoutOf } from '@histofed/fl-core';
import { PlainFeatureMoments, fromPlainMoments } from '@histofed/ml';

/**
 * Checks a decrypted contribution before it may reach the aggregate. Pure: returns the reason for
 * rejection, or null when the update is acceptable.
 */
export function checkContributionWeights(
  expectedLayout: readonly TensorSpec[],
  base: WeightSet,
  weights: WeightSet,
  maxUpdateNorm: number,
): string | null {
  try {
    assertSameLayout(expectedLayout, layoutOf(weights), 'update');
  } catch (e) {
    return (e as Error).message;
  }
  const bad = findNonFinite(weights);
  if (bad) return `update: tensor "${bad.tensor}" holds a non-finite value at index ${bad.index}`;
  if (maxUpdateNorm > 0) {
    const norm = l2Distance(base, weights);
    if (norm > maxUpdateNorm) {
      return `update: norm ${norm.toFixed(4)} exceeds the run's bound ${maxUpdateNorm}`;
    }
  }
  return null;
}

/** Why reported feature moments are unusable (asymmetric, negative variance, ...), or null. */
export function featureMomentsProblem(m: PlainFeatureMoments): string | null {
  try {
    fromPlainMoments(m, 'moments');
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}
