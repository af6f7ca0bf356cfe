/**
 * Per-image uncertainty measures (issue 15), all "higher = more uncertain", computed from probability
 * vectors only (no tfjs): predictive entropy, mutual information between the prediction and a
 * stochastic member (ensemble members or MC-dropout masks), and tile disagreement within an image.
 */
import { ValidationError } from '@histofed/fl-core';

const EPS = 1e-12;

function entropyOf(p: ArrayLike<number>, offset: number, k: number): number {
  let h = 0;
  for (let c = 0; c < k; c++) {
    const v = p[offset + c];
    if (v > EPS) h -= v * Math.log(v);
  }
  return h;
}

/** Entropy of the k probabilities at `offset`, divided by log k (0 = certain, 1 = uniform). */
export function predictiveEntropy(p: ArrayLike<number>, k: number, offset = 0): number {
  if (!Number.isInteger(k) || k < 2) throw new ValidationError(`predictiveEntropy: k must be an integer >= 2, got ${k}`);
  if (offset < 0 || offset + k > p.length) throw new ValidationError(`predictiveEntropy: ${k} values at ${offset} do not fit ${p.length}`);
  return Math.min(1, Math.max(0, entropyOf(p, offset, k) / Math.log(k)));
}

/** 1 - the largest of the k probabilities at `offset`. */
export function oneMinusConfidence(p: ArrayLike<number>, k: number, offset = 0): number {
  let max = 0;
  for (let c = 0; c < k; c++) max = Math.max(max, p[offset + c]);
  return 1 - max;
}

/**
 * Mutual information between the prediction and the member (BALD): H(mean of the samples) - mean of
 * H(sample), over the k probabilities at `offset` of each sample, divided by log k. 0 when every
 * sample agrees; high when confident samples disagree.
 */
export function mutualInformation(samples: readonly ArrayLike<number>[], k: number, offset = 0): number {
  if (samples.length === 0) throw new ValidationError('mutualInformation: no samples');
  const mean = new Float64Array(k);
  let meanEntropy = 0;
  for (const s of samples) {
    for (let c = 0; c < k; c++) mean[c] += s[offset + c] / samples.length;
    meanEntropy += entropyOf(s, offset, k) / samples.length;
  }
  return Math.max(0, (entropyOf(mean, 0, k) - meanEntropy) / Math.log(k));
}

/** Variance over the samples of the probability of class `c` (e.g. malignant) at `offset`. */
export function probabilityVariance(samples: readonly ArrayLike<number>[], c: number, offset = 0): number {
  if (samples.length === 0) throw new ValidationError('probabilityVariance: no samples');
  const values = samples.map((s) => s[offset + c]);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return values.reduce((a, v) => a + (v - mean) ** 2, 0) / values.length;
}

/**
 * Tile disagreement: the share of an image's tiles whose class (argmax of the k probabilities at
 * `offset` of each row of width `width`) differs from `imageClass`. `rows` holds only that image's
 * tile rows. 0 for a single tile.
 */
export function tileDisagreement(rows: ArrayLike<number>, width: number, k: number, imageClass: number, offset = 0): number {
  const tiles = rows.length / width;
  if (!Number.isInteger(tiles) || tiles < 1) throw new ValidationError(`tileDisagreement: ${rows.length} values are not rows of width ${width}`);
  let differ = 0;
  for (let t = 0; t < tiles; t++) {
    let arg = 0;
    for (let c = 1; c < k; c++) if (rows[t * width + offset + c] > rows[t * width + offset + arg]) arg = c;
    if (arg !== imageClass) differ++;
  }
  return differ / tiles;
}
