import { ValidationError } from '@histofed/fl-core';
import { hashSeed, mulberry32 } from '../prng';
import { DEFAULT_MACENKO_TARGET, fromOpticalDensity, opticalDensity } from './macenko';
import { angleDegrees, checkNumbers, cross3, dot3, unit3, type RgbPixels, type Vec3 } from './pixels';

/**
 * A fixed, plausible H&E stain transform for one simulated hospital: its hematoxylin and eosin look
 * a little different (stain vectors turned by a few degrees) and are a little stronger or weaker
 * (concentrations scaled by 10-20 % up or down), as between laboratories with other reagents,
 * staining times or scanners.
 *
 * Applied in optical-density space: each pixel's OD is decomposed against the `reference` stain
 * vectors into H and E concentrations plus a residual (whatever the two stains do not explain),
 * and re-composed as OD' = H' * sH * cH + E' * sE * cE + residual. That is one fixed 3x3 linear map
 * of OD, so white stays white, the structure of the image is untouched, and applying it costs a few
 * multiplications per pixel. JSON-serializable.
 */
export interface StainShift {
  readonly method: 'stain-shift';
  readonly site: number;
  readonly seed: number;
  /** Stain vectors used to decompose (H row 0, E row 1); DEFAULT_MACENKO_TARGET's by default. */
  readonly reference: [Vec3, Vec3];
  /** The site's stain vectors (unit, H row 0, E row 1). */
  readonly stainMatrix: [Vec3, Vec3];
  /** Angle in degrees between each reference vector and the site's (H, E). */
  readonly rotationDegrees: [number, number];
  /** Factor applied to the H and E concentrations. */
  readonly concentrationScale: [number, number];
}

export interface StainShiftOptions {
  /** Stain vectors to perturb (H, E); default DEFAULT_MACENKO_TARGET.stainMatrix. */
  readonly reference?: readonly [Vec3, Vec3];
  /** Range of the rotation of each stain vector in degrees; default [2, 8]. */
  readonly rotationDegrees?: readonly [number, number];
  /** Range of |scale - 1| of each concentration; default [0.1, 0.2]. */
  readonly scaleChange?: readonly [number, number];
}

/**
 * The stain shift of simulated site `siteIndex` (0-based): deterministic from (siteIndex, seed),
 * different for every site. Each stain vector turns by an angle drawn from `rotationDegrees` in a
 * random direction (kept in the positive OD octant), each concentration scale is 1 +/- a change
 * drawn from `scaleChange`.
 */
export function siteStainShift(siteIndex: number, seed: number, options: StainShiftOptions = {}): StainShift {
  if (!Number.isInteger(siteIndex) || siteIndex < 0) throw new ValidationError(`siteIndex must be a non-negative integer, got ${siteIndex}`);
  if (!Number.isFinite(seed)) throw new ValidationError(`seed must be a finite number, got ${seed}`);
  const reference = (options.reference ?? DEFAULT_MACENKO_TARGET.stainMatrix).map((v) => unit3(v)) as [Vec3, Vec3];
  const [rotMin, rotMax] = options.rotationDegrees ?? [2, 8];
  const [scMin, scMax] = options.scaleChange ?? [0.1, 0.2];
  if (!(rotMin >= 0 && rotMax >= rotMin && rotMax < 45)) throw new ValidationError('rotationDegrees must be a range within [0, 45)');
  if (!(scMin >= 0 && scMax >= scMin && scMax < 1)) throw new ValidationError('scaleChange must be a range within [0, 1)');
  const rand = mulberry32(hashSeed(seed, 'stain-shift', siteIndex));
  const turn = (v: Vec3): Vec3 => {
    const theta = ((rotMin + (rotMax - rotMin) * rand()) * Math.PI) / 180;
    const psi = 2 * Math.PI * rand();
    // Orthonormal basis (u1, u2) of the plane perpendicular to v.
    const helper: Vec3 = Math.abs(v[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0];
    const u1 = unit3(cross3(v, helper));
    const u2 = cross3(v, u1);
    const d = [0, 1, 2].map((c) => Math.cos(psi) * u1[c] + Math.sin(psi) * u2[c]);
    const turned = [0, 1, 2].map((c) => Math.max(0.01, Math.cos(theta) * v[c] + Math.sin(theta) * d[c]));
    return unit3(turned);
  };
  const scale = (): number => {
    const change = scMin + (scMax - scMin) * rand();
    return rand() < 0.5 ? 1 - change : 1 + change;
  };
  const stainMatrix: [Vec3, Vec3] = [turn(reference[0]), turn(reference[1])];
  const concentrationScale: [number, number] = [scale(), scale()];
  return {
    method: 'stain-shift',
    site: siteIndex,
    seed,
    reference,
    stainMatrix,
    rotationDegrees: [angleDegrees(reference[0], stainMatrix[0]), angleDegrees(reference[1], stainMatrix[1])],
    concentrationScale,
  };
}

/** The 3x3 OD map (row-major) of a shift: M = A' S P + (I - A P), P the pseudo-inverse of A = [h e]. */
export function stainShiftMatrix(shift: StainShift): number[] {
  validateStainShift(shift);
  const [h, e] = shift.reference;
  const [h2, e2] = shift.stainMatrix;
  const [sh, se] = shift.concentrationScale;
  const hh = dot3(h, h);
  const ee = dot3(e, e);
  const he = dot3(h, e);
  const det = hh * ee - he * he;
  if (!(Math.abs(det) > 1e-12)) throw new ValidationError('stain shift reference vectors are parallel');
  // Rows of P (2x3): cH = pH . od, cE = pE . od.
  const pH = [0, 1, 2].map((c) => (ee * h[c] - he * e[c]) / det);
  const pE = [0, 1, 2].map((c) => (hh * e[c] - he * h[c]) / det);
  const m: number[] = [];
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 3; c++) {
      const shifted = h2[r] * sh * pH[c] + e2[r] * se * pE[c];
      const residual = (r === c ? 1 : 0) - (h[r] * pH[c] + e[r] * pE[c]);
      m.push(shifted + residual);
    }
  }
  return m;
}

/** Applies a site's stain shift to RGB pixels in [0, 1] (see StainShift); returns new pixels. */
export function applyStainShift(pixels: RgbPixels, shift: StainShift): RgbPixels {
  const m = stainShiftMatrix(shift);
  const od = opticalDensity(pixels);
  for (let i = 0; i < od.length; i += 3) {
    const o0 = od[i];
    const o1 = od[i + 1];
    const o2 = od[i + 2];
    od[i] = Math.max(0, m[0] * o0 + m[1] * o1 + m[2] * o2);
    od[i + 1] = Math.max(0, m[3] * o0 + m[4] * o1 + m[5] * o2);
    od[i + 2] = Math.max(0, m[6] * o0 + m[7] * o1 + m[8] * o2);
  }
  return fromOpticalDensity(od);
}

/** Throws ValidationError unless `s` is a well-formed StainShift. */
export function validateStainShift(s: unknown, what = 'stain shift'): asserts s is StainShift {
  const o = s as Partial<StainShift> | null;
  if (typeof o !== 'object' || o === null || o.method !== 'stain-shift' || !Array.isArray(o.reference) || !Array.isArray(o.stainMatrix)) {
    throw new ValidationError(`${what} must be {method: 'stain-shift', reference, stainMatrix, concentrationScale, ...}`);
  }
  for (const [k, v] of [
    ['reference[0]', o.reference[0]],
    ['reference[1]', o.reference[1]],
    ['stainMatrix[0]', o.stainMatrix[0]],
    ['stainMatrix[1]', o.stainMatrix[1]],
  ] as const) {
    checkNumbers(v, 3, `${what}.${k}`);
  }
  checkNumbers(o.concentrationScale, 2, `${what}.concentrationScale`);
  if (!o.concentrationScale.every((x) => x > 0)) throw new ValidationError(`${what}.concentrationScale must be positive`);
}
