/**
 * Pure arithmetic of bench:active: the mean learning curve over folds, the label fraction at which a
 * strategy reaches the full-label balanced accuracy, and whether it stays above random.
 */

/** One point of one fold's learning curve. */
export interface CurvePoint {
  readonly labelFraction: number;
  readonly balancedAccuracy: number;
}

export interface MeanPoint {
  readonly labelFraction: number;
  readonly balancedAccuracy: number;
  readonly balancedAccuracySd: number;
  readonly folds: number;
}

const r4 = (x: number) => Number(x.toFixed(4));

function meanSd(xs: readonly number[]): { mean: number; sd: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, sd };
}

/**
 * The mean curve over folds, point by point (cycle i of every fold; folds share the schedule, so their
 * label fractions differ only by rounding of the per-site budgets). Curves must have the same length.
 */
export function meanCurve(curves: readonly (readonly CurvePoint[])[]): MeanPoint[] {
  if (curves.length === 0) return [];
  const n = curves[0].length;
  if (curves.some((c) => c.length !== n)) throw new Error('meanCurve: the folds\' curves differ in length');
  return Array.from({ length: n }, (_, i) => {
    const ba = meanSd(curves.map((c) => c[i].balancedAccuracy));
    return {
      labelFraction: r4(meanSd(curves.map((c) => c[i].labelFraction)).mean),
      balancedAccuracy: r4(ba.mean),
      balancedAccuracySd: r4(ba.sd),
      folds: curves.length,
    };
  });
}

/** The smallest label fraction whose (mean) balanced accuracy reaches `full` (minus `tolerance`); null if none does. */
export function labelFractionToFullAccuracy(curve: readonly CurvePoint[], full: number, tolerance = 0): number | null {
  let best: number | null = null;
  for (const p of curve) if (p.balancedAccuracy >= full - tolerance - 1e-12 && (best === null || p.labelFraction < best)) best = p.labelFraction;
  return best;
}

/**
 * Whether `curve` is strictly above `random` at every budget: the points after the start (point 0 is
 * the same labelled set for every strategy) and before everything is labelled (label fraction 1, the
 * same labels for every strategy). Point i of one is compared with point i of the other. True when
 * there is no such budget point.
 */
export function aboveAtEveryBudget(curve: readonly CurvePoint[], random: readonly CurvePoint[]): boolean {
  if (curve.length !== random.length) throw new Error('aboveAtEveryBudget: curves differ in length');
  return curve.every((p, i) => i === 0 || p.labelFraction >= 1 - 1e-9 || p.balancedAccuracy > random[i].balancedAccuracy);
}

/** The target for one uncertainty strategy: full-label accuracy with <= 50 % of the labels, and above random at every budget. */
export function targetMet(curve: readonly CurvePoint[], random: readonly CurvePoint[], full: number): { reachesFullByHalf: boolean; aboveRandom: boolean; met: boolean } {
  const f = labelFractionToFullAccuracy(curve, full);
  const reachesFullByHalf = f !== null && f <= 0.5 + 1e-9;
  const aboveRandom = aboveAtEveryBudget(curve, random);
  return { reachesFullByHalf, aboveRandom, met: reachesFullByHalf && aboveRandom };
}

/** How many images each site queries: `fraction` of its pool (at least 1), never more than it has unlabelled. */
export function siteBudget(poolImages: number, unlabelled: number, fraction: number): number {
  return Math.min(unlabelled, Math.max(1, Math.round(fraction * poolImages)));
}

/** How many of a site's `patients` training patients start labelled: `fraction` of them, at least 1 (when it has any). */
export function startPatients(patients: number, fraction: number): number {
  return patients === 0 ? 0 : Math.min(patients, Math.max(1, Math.round(fraction * patients)));
}
