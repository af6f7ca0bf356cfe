/**
 * Federated boosting primitives (issue 16): the weights a site gives its own training images before
 * the next boosted member is trained on them (TrainOptions.sampleWeights).
 *
 * SAMME-style reweighting on soft errors. SAMME (multi-class AdaBoost) multiplies the weight of a
 * misclassified example by exp(alpha); here the hard 0/1 error is replaced by the soft error of the
 * current ensemble, e_i = 1 - p_i(y_i) (the probability the ensemble does NOT give image i's class),
 * and w_i = exp(strength * e_i): an image the ensemble gets confidently right keeps weight ~1, one it
 * gets confidently wrong weighs up to exp(strength) times more. The weights are capped (largest /
 * smallest within a class at most `maxRatio`) and normalized to mean 1 within each class, so boosting
 * moves weight between images of a class but never between classes: the balanced class weights
 * stay in charge of the class balance.
 *
 * Chosen because it needs nothing but the site's own ensemble outputs on its own training images:
 * the members are models every site already holds (the global model and earlier boosted members,
 * trained federatedly), so each site computes its weights locally and trains the next member with
 * the ordinary federated rounds — no extra exchange, nothing about the images leaves the site, and
 * it works under secure aggregation.
 */
import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';

export interface BoostingWeightOptions {
  /** The SAMME learning rate on the soft error: w = exp(strength * e) (default 2; 0: all weights 1). */
  readonly strength?: number;
  /**
   * Cap of largest / smallest weight within a class (default 20; >= 1, Infinity: no cap). As every
   * class has mean 1, every weight then lies in [1 / maxRatio, maxRatio].
   */
  readonly maxRatio?: number;
  /**
   * Values per row of `probabilities` when the rows hold more than the stage-1 distribution (e.g.
   * two-stage rows: numClasses + subtypes; the stage-1 block comes first). Default numClasses.
   */
  readonly width?: number;
}

export const DEFAULT_BOOSTING_STRENGTH = 2;
export const DEFAULT_BOOSTING_MAX_RATIO = 20;

/**
 * Boosting weights of `labels.length` images from the current ensemble's per-image output rows
 * `probabilities` (count x numClasses, or count x `options.width` with the stage-1 block first): see
 * the module comment. Returns one weight per image; every class present has mean weight 1.
 */
export function boostingImageWeights(
  probabilities: Float32Array,
  labels: ArrayLike<number>,
  numClasses: number,
  options: BoostingWeightOptions = {},
): Float32Array {
  const strength = options.strength ?? DEFAULT_BOOSTING_STRENGTH;
  const maxRatio = options.maxRatio ?? DEFAULT_BOOSTING_MAX_RATIO;
  const width = options.width ?? numClasses;
  if (!Number.isInteger(numClasses) || numClasses < 2) throw new ValidationError(`boostingImageWeights: numClasses must be an integer >= 2, got ${numClasses}`);
  if (!Number.isFinite(strength) || strength < 0) throw new ValidationError(`boostingImageWeights: strength must be a finite number >= 0, got ${strength}`);
  if (!(maxRatio >= 1)) throw new ValidationError(`boostingImageWeights: maxRatio must be >= 1, got ${maxRatio}`);
  if (!Number.isInteger(width) || width < numClasses) throw new ValidationError(`boostingImageWeights: width must be an integer >= numClasses (${numClasses}), got ${width}`);
  const n = labels.length;
  if (probabilities.length !== n * width) {
    throw new ValidationError(`boostingImageWeights: ${n} images of ${width} values need ${n * width} probabilities, got ${probabilities.length}`);
  }
  // Log-weights strength * e_i, and per class the smallest (the cap is relative to it).
  const logW = new Float64Array(n);
  const minOf = new Float64Array(numClasses).fill(Infinity);
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (!Number.isInteger(y) || y < 0 || y >= numClasses) throw new ValidationError(`boostingImageWeights: label ${y} of image ${i} is not a class in [0, ${numClasses})`);
    const p = probabilities[i * width + y];
    if (!(p >= -1e-6 && p <= 1 + 1e-6)) throw new ValidationError(`boostingImageWeights: probability ${p} of image ${i}'s class is not in [0, 1]`);
    const e = 1 - Math.min(1, Math.max(0, p));
    logW[i] = strength * e;
    if (logW[i] < minOf[y]) minOf[y] = logW[i];
  }
  // Cap within the class (largest / smallest <= maxRatio), relative to the class's smallest weight.
  const logCap = Math.log(maxRatio);
  const w = new Float64Array(n);
  const sum = new Float64Array(numClasses);
  const count = new Float64Array(numClasses);
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    w[i] = Math.exp(Math.min(logW[i] - minOf[y], logCap));
    sum[y] += w[i];
    count[y]++;
  }
  // Mean 1 within each class.
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (w[i] * count[labels[i]]) / sum[labels[i]];
  return out;
}

/**
 * Spreads per-image weights over the training rows: row r gets the weight of image `data.imageOf[r]`
 * (tile rows, grid tiles and training views alike, carry their image's weight); without `imageOf`
 * the rows are the images (one row per image). Pass `{count, imageOf}` for any other row -> image
 * mapping (e.g. augmented copies: row r is image r % images). The result is TrainOptions.sampleWeights.
 */
export function rowWeightsFromImages(imageWeights: ArrayLike<number>, data: Pick<LabeledImages, 'count' | 'imageOf'>): Float32Array {
  const imageOf = data.imageOf;
  if (imageOf === undefined) {
    if (imageWeights.length !== data.count) {
      throw new ValidationError(`rowWeightsFromImages: ${imageWeights.length} image weights for ${data.count} rows of one image each (give imageOf for tile rows)`);
    }
    return Float32Array.from(imageWeights);
  }
  if (imageOf.length !== data.count) throw new ValidationError(`rowWeightsFromImages: imageOf has ${imageOf.length} entries for ${data.count} rows`);
  const out = new Float32Array(data.count);
  for (let r = 0; r < data.count; r++) {
    const i = imageOf[r];
    if (!(i >= 0 && i < imageWeights.length)) throw new ValidationError(`rowWeightsFromImages: row ${r} belongs to image ${i}, but there are ${imageWeights.length} image weights`);
    out[r] = imageWeights[i];
  }
  return out;
}
