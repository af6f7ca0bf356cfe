import { ValidationError } from '@histofed/fl-core';
import { DataError } from '../data-error';
import { symmetricEigen3 } from './eigen3';
import {
  checkNumbers,
  checkPixels,
  clamp01,
  dot3,
  median,
  percentileOfSorted,
  unit3,
  type RgbPixels,
  type Vec3,
} from './pixels';

/**
 * Macenko stain normalization (Macenko et al., "A method for normalizing histology slides for
 * quantitative analysis", ISBI 2009), following the widely used reference implementation:
 *
 * 1. optical density per channel, OD = -ln((I + 1) / Io) with I = 255 * pixel and Io = 256, so a white
 *    pixel has OD 0;
 * 2. transparent pixels (OD below beta = 0.15 in any channel) are dropped;
 * 3. the two eigenvectors of the OD covariance with the largest eigenvalues span the stain plane;
 * 4. OD is projected onto that plane and the angle of each projection taken; the alpha = 1st and
 *    99th percentiles of the angle give the two extreme stain directions (robust extremes);
 * 5. the hematoxylin vector is the one with the larger red OD component (H absorbs red), eosin the
 *    other;
 * 6. concentrations of every pixel by least squares against the two stain vectors, and the 99th
 *    percentile of each concentration as its "maximum".
 *
 * Normalizing an image decomposes it with its own stain vectors and maxima, rescales the
 * concentrations to the target's maxima and re-composes with the target's stain vectors.
 *
 * A fitted MacenkoTarget is 8 numbers, JSON-serializable: a site can share it (or the median over
 * its images) without sharing pixels.
 */
export interface MacenkoTarget {
  readonly method: 'macenko';
  /** Unit OD vectors of hematoxylin (row 0) and eosin (row 1), RGB order, components >= 0. */
  readonly stainMatrix: [Vec3, Vec3];
  /** 99th-percentile concentrations of H and E. */
  readonly maxConcentrations: [number, number];
}

export interface MacenkoOptions {
  /** OD threshold below which a pixel counts as transparent (any channel); default 0.15. */
  readonly beta?: number;
  /** Percentile of the angle for the robust extremes; default 1. */
  readonly alpha?: number;
  /** Percentile of each concentration used as its maximum; default 99. */
  readonly maxPercentile?: number;
  /** Fewer tissue pixels than this and the fit fails; default 16. */
  readonly minTissuePixels?: number;
}

/** Io of the optical density. */
export const MACENKO_IO = 256;

/**
 * The reference H&E stain matrix and maxima of Macenko's reference implementation (HERef, maxCRef),
 * a sensible target when no reference image has been chosen.
 */
export const DEFAULT_MACENKO_TARGET: MacenkoTarget = Object.freeze({
  method: 'macenko',
  stainMatrix: [unit3([0.5626, 0.7201, 0.4062]), unit3([0.2159, 0.8012, 0.5581])] as [Vec3, Vec3],
  maxConcentrations: [1.9705, 1.0308] as [number, number],
});

const { log, exp, cos, sin, atan2 } = Math;

/** OD of every channel of every pixel, as a Float64Array of triples. */
export function opticalDensity(pixels: RgbPixels): Float64Array {
  checkPixels(pixels);
  const od = new Float64Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) od[i] = log(MACENKO_IO / (255 * clamp01(pixels[i]) + 1));
  return od;
}

/** RGB in [0, 1] of OD triples (inverse of opticalDensity, clamped). */
export function fromOpticalDensity(od: Float64Array): RgbPixels {
  const out = new Float32Array(od.length);
  for (let i = 0; i < od.length; i++) out[i] = clamp01((MACENKO_IO * exp(-od[i]) - 1) / 255);
  return out;
}

/** Orients a stain vector into the positive octant (OD is never negative). */
function positive(v: Vec3): Vec3 {
  return v[0] + v[1] + v[2] < 0 ? [-v[0], -v[1], -v[2]] : v;
}

/** Least-squares concentrations [cH, cE] of every OD triple against the stain matrix (Float64Array of pairs). */
export function stainConcentrations(od: Float64Array, stainMatrix: readonly [Vec3, Vec3]): Float64Array {
  const [h, e] = stainMatrix;
  const hh = dot3(h, h);
  const ee = dot3(e, e);
  const he = dot3(h, e);
  const det = hh * ee - he * he;
  if (!(Math.abs(det) > 1e-12)) throw new ValidationError('stain vectors are parallel; cannot separate the stains');
  const n = od.length / 3;
  const c = new Float64Array(n * 2);
  for (let p = 0; p < n; p++) {
    const o0 = od[3 * p];
    const o1 = od[3 * p + 1];
    const o2 = od[3 * p + 2];
    const bh = h[0] * o0 + h[1] * o1 + h[2] * o2;
    const be = e[0] * o0 + e[1] * o1 + e[2] * o2;
    c[2 * p] = (ee * bh - he * be) / det;
    c[2 * p + 1] = (hh * be - he * bh) / det;
  }
  return c;
}

function maxConcentrationsOf(c: Float64Array, pct: number): [number, number] {
  const n = c.length / 2;
  const h = new Float64Array(n);
  const e = new Float64Array(n);
  for (let p = 0; p < n; p++) {
    h[p] = c[2 * p];
    e[p] = c[2 * p + 1];
  }
  return [percentileOfSorted(h.sort(), pct), percentileOfSorted(e.sort(), pct)];
}

/**
 * Fits stain vectors and maximum concentrations to one image, or null when it has fewer than
 * `minTissuePixels` tissue pixels (blank or background-only tiles).
 */
export function tryFitMacenko(pixels: RgbPixels, options: MacenkoOptions = {}): MacenkoTarget | null {
  return fitFromOd(opticalDensity(pixels), options);
}

/** As tryFitMacenko, but throws DataError when the image has too little tissue. */
export function fitMacenko(pixels: RgbPixels, options: MacenkoOptions = {}): MacenkoTarget {
  const fitted = tryFitMacenko(pixels, options);
  if (!fitted) {
    throw new DataError(
      `Macenko fit needs at least ${options.minTissuePixels ?? 16} tissue pixels (OD >= ${options.beta ?? 0.15} in every channel); the image is background`,
    );
  }
  return fitted;
}

function fitFromOd(od: Float64Array, options: MacenkoOptions): MacenkoTarget | null {
  const beta = options.beta ?? 0.15;
  const alpha = options.alpha ?? 1;
  const maxPct = options.maxPercentile ?? 99;
  const minTissue = Math.max(3, options.minTissuePixels ?? 16);
  const n = od.length / 3;

  // Tissue pixels and their covariance (two passes, float64).
  const tissue: number[] = [];
  const mean = [0, 0, 0];
  for (let p = 0; p < n; p++) {
    const i = 3 * p;
    if (od[i] >= beta && od[i + 1] >= beta && od[i + 2] >= beta) {
      tissue.push(i);
      mean[0] += od[i];
      mean[1] += od[i + 1];
      mean[2] += od[i + 2];
    }
  }
  const m = tissue.length;
  if (m < minTissue) return null;
  for (let c = 0; c < 3; c++) mean[c] /= m;
  const cov = [0, 0, 0, 0, 0, 0, 0, 0, 0];
  for (const i of tissue) {
    const d0 = od[i] - mean[0];
    const d1 = od[i + 1] - mean[1];
    const d2 = od[i + 2] - mean[2];
    cov[0] += d0 * d0;
    cov[1] += d0 * d1;
    cov[2] += d0 * d2;
    cov[4] += d1 * d1;
    cov[5] += d1 * d2;
    cov[8] += d2 * d2;
  }
  for (const k of [0, 1, 2, 4, 5, 8]) cov[k] /= Math.max(1, m - 1);
  const { vectors } = symmetricEigen3(cov);
  const v1 = positive(vectors[0]);
  const v2 = vectors[1];

  // Angles of the projections onto the plane (v1, v2); robust extremes.
  const phi = new Float64Array(m);
  tissue.forEach((i, k) => {
    const o = [od[i], od[i + 1], od[i + 2]];
    phi[k] = atan2(dot3(o, v2), dot3(o, v1));
  });
  phi.sort();
  const lo = percentileOfSorted(phi, alpha);
  const hi = percentileOfSorted(phi, 100 - alpha);
  const dir = (a: number): Vec3 => positive(unit3([0, 1, 2].map((c) => cos(a) * v1[c] + sin(a) * v2[c])));
  const vMin = dir(lo);
  const vMax = dir(hi);
  const stainMatrix: [Vec3, Vec3] = vMin[0] > vMax[0] ? [vMin, vMax] : [vMax, vMin];
  if (Math.abs(dot3(stainMatrix[0], stainMatrix[1])) > 1 - 1e-9) return null; // a single colour: no two stains

  const conc = stainConcentrations(od, stainMatrix);
  const maxConcentrations = maxConcentrationsOf(conc, maxPct);
  if (!(maxConcentrations[0] > 1e-6 && maxConcentrations[1] > 1e-6)) return null;
  return { method: 'macenko', stainMatrix, maxConcentrations };
}

/**
 * Combines fitted targets (of many images or many sites) into one: the component-wise median of
 * each stain vector (re-normalized to unit length) and the median of each maximum concentration --
 * robust to a few badly fitted tiles.
 */
export function combineMacenkoTargets(targets: readonly MacenkoTarget[]): MacenkoTarget {
  if (targets.length === 0) throw new ValidationError('combineMacenkoTargets needs at least one target');
  targets.forEach((t, i) => validateMacenkoTarget(t, `targets[${i}]`));
  const vec = (row: 0 | 1): Vec3 => unit3([0, 1, 2].map((c) => median(targets.map((t) => t.stainMatrix[row][c]))));
  return {
    method: 'macenko',
    stainMatrix: [vec(0), vec(1)],
    maxConcentrations: [median(targets.map((t) => t.maxConcentrations[0])), median(targets.map((t) => t.maxConcentrations[1]))],
  };
}

/** Fits every image that has enough tissue and combines the fits; throws DataError when none has. */
export function fitMacenkoMany(images: readonly RgbPixels[], options: MacenkoOptions = {}): MacenkoTarget {
  const fits = images.map((p) => tryFitMacenko(p, options)).filter((t): t is MacenkoTarget => t !== null);
  if (fits.length === 0) throw new DataError(`Macenko fit: none of the ${images.length} images has enough tissue`);
  return combineMacenkoTargets(fits);
}

/**
 * Normalizes `pixels` to `target`: concentrations against the image's own stain vectors (fitted
 * unless `source` is given, e.g. a slide-level fit), scaled by target max / source max, re-composed
 * with the target's stain vectors. An image with too little tissue to fit is returned unchanged
 * (copied): background stays background. Output in [0, 1].
 */
export function normalizeMacenko(
  pixels: RgbPixels,
  target: MacenkoTarget,
  options: MacenkoOptions & { readonly source?: MacenkoTarget } = {},
): RgbPixels {
  validateMacenkoTarget(target, 'target');
  const od = opticalDensity(pixels);
  const source = options.source ?? fitFromOd(od, options);
  if (!source) return Float32Array.from(pixels, clamp01);
  if (options.source) validateMacenkoTarget(options.source, 'source');
  const conc = stainConcentrations(od, source.stainMatrix);
  const [h, e] = target.stainMatrix;
  const sh = target.maxConcentrations[0] / source.maxConcentrations[0];
  const se = target.maxConcentrations[1] / source.maxConcentrations[1];
  const n = od.length / 3;
  for (let p = 0; p < n; p++) {
    const ch = conc[2 * p] * sh;
    const ce = conc[2 * p + 1] * se;
    for (let c = 0; c < 3; c++) od[3 * p + c] = h[c] * ch + e[c] * ce;
  }
  return fromOpticalDensity(od);
}

/** Throws ValidationError unless `t` is a well-formed MacenkoTarget (e.g. received from another site). */
export function validateMacenkoTarget(t: unknown, what = 'Macenko target'): asserts t is MacenkoTarget {
  const o = t as Partial<MacenkoTarget> | null;
  if (typeof o !== 'object' || o === null || o.method !== 'macenko' || !Array.isArray(o.stainMatrix) || o.stainMatrix.length !== 2) {
    throw new ValidationError(`${what} must be {method: 'macenko', stainMatrix: [[r, g, b], [r, g, b]], maxConcentrations: [h, e]}`);
  }
  checkNumbers(o.stainMatrix[0], 3, `${what}.stainMatrix[0]`);
  checkNumbers(o.stainMatrix[1], 3, `${what}.stainMatrix[1]`);
  checkNumbers(o.maxConcentrations, 2, `${what}.maxConcentrations`);
  if (!o.maxConcentrations.every((x) => x > 0)) throw new ValidationError(`${what}.maxConcentrations must be positive`);
  for (const v of o.stainMatrix) {
    if (!(Math.hypot(v[0], v[1], v[2]) > 0)) throw new ValidationError(`${what}.stainMatrix rows must not be zero`);
  }
}

/**
 * Composes RGB pixels from stain vectors and concentrations (pairs [cH, cE] per pixel):
 * OD = H * cH + E * cE, pixel = (Io * exp(-OD) - 1) / 255. The inverse of stainConcentrations for
 * pixels that hold only these two stains; used to synthesize H&E images with known stains.
 */
export function composeStains(stainMatrix: readonly [Vec3, Vec3], concentrations: Float64Array): RgbPixels {
  if (concentrations.length % 2 !== 0) throw new ValidationError('concentrations must hold [cH, cE] pairs');
  const [h, e] = stainMatrix;
  const n = concentrations.length / 2;
  const od = new Float64Array(n * 3);
  for (let p = 0; p < n; p++) {
    const ch = concentrations[2 * p];
    const ce = concentrations[2 * p + 1];
    for (let c = 0; c < 3; c++) od[3 * p + c] = Math.max(0, h[c] * ch + e[c] * ce);
  }
  return fromOpticalDensity(od);
}
