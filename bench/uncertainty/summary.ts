/**
 * The arithmetic of bench:uncertainty (pure, tested in summary.spec.ts): per fold, each measure's
 * review thresholds are chosen on the validation images and applied to the test images; the default
 * measure is the one with the highest validation AUROC; then means over folds and pooled sums.
 */
import { chooseReviewThreshold, reviewAtThreshold, uncertaintyAuroc, type UncertaintyMeasure } from '@histofed/ml';
import { meanStd, type MeanStd } from '../accuracy/stats';

/** One split (validation or test) of one fold at image level: stage-1 correctness, patients, scores. */
export interface ScoredSet {
  readonly correct: readonly boolean[];
  readonly patients: readonly string[];
  /** Per measure, one score per image (higher = more uncertain). */
  readonly scores: Readonly<Partial<Record<UncertaintyMeasure, readonly number[]>>>;
}

/** A validation threshold applied to one fold's test images. */
export interface SelectiveOutcome {
  readonly threshold: number;
  /** Realised review rate on test (the target was met on validation). */
  readonly reviewRate: number;
  readonly images: number;
  readonly unflagged: number;
  readonly unflaggedCorrect: number;
  readonly correct: number;
  readonly accuracyUnflagged: number | null;
  readonly accuracyAll: number;
  /** Patient-level recognition rate (mean over patients of the share of their images right), unflagged images only / all. */
  readonly patientAccuracyUnflagged: number | null;
  readonly patientAccuracyAll: number | null;
}

export interface MeasureFold {
  readonly validationAuroc: number | null;
  readonly auroc: number | null;
  /** Keyed by the review rate as a string ("0.1"). */
  readonly selective: Readonly<Record<string, SelectiveOutcome>>;
}

/** Mean over patients of the share of their (included) images that are right; null when none is included. */
export function patientRecognition(correct: readonly boolean[], patients: readonly string[], include?: readonly boolean[]): number | null {
  const per = new Map<string, { n: number; right: number }>();
  correct.forEach((c, i) => {
    if (include && !include[i]) return;
    const p = per.get(patients[i]) ?? { n: 0, right: 0 };
    p.n++;
    if (c) p.right++;
    per.set(patients[i], p);
  });
  if (per.size === 0) return null;
  let sum = 0;
  for (const p of per.values()) sum += p.right / p.n;
  return sum / per.size;
}

/** Each measure of `measures`: AUROCs, and per review rate the validation threshold's effect on test. */
export function reviewFold(validation: ScoredSet, test: ScoredSet, measures: readonly UncertaintyMeasure[], rates: readonly number[]): Record<string, MeasureFold> {
  const out: Record<string, MeasureFold> = {};
  const wrong = (s: ScoredSet) => s.correct.map((c) => !c);
  for (const m of measures) {
    const v = validation.scores[m];
    const t = test.scores[m];
    if (!v || !t) throw new Error(`reviewFold: no ${m} scores`);
    const selective: Record<string, SelectiveOutcome> = {};
    for (const rate of rates) {
      const threshold = chooseReviewThreshold(v, rate);
      const r = reviewAtThreshold(t, test.correct, threshold);
      const unflaggedMask = t.map((s) => s < threshold);
      selective[String(rate)] = {
        threshold,
        reviewRate: r.reviewRate,
        images: t.length,
        unflagged: t.length - r.flagged,
        unflaggedCorrect: test.correct.filter((c, i) => c && unflaggedMask[i]).length,
        correct: test.correct.filter(Boolean).length,
        accuracyUnflagged: r.accuracyUnflagged,
        accuracyAll: r.accuracyAll,
        patientAccuracyUnflagged: patientRecognition(test.correct, test.patients, unflaggedMask),
        patientAccuracyAll: patientRecognition(test.correct, test.patients),
      };
    }
    out[m] = { validationAuroc: uncertaintyAuroc(v, wrong(validation)), auroc: uncertaintyAuroc(t, wrong(test)), selective };
  }
  return out;
}

/** The measure with the highest validation AUROC (ties and missing AUROCs: the earlier in `order`; none at all: the first). */
export function chooseMeasure(folds: Readonly<Record<string, MeasureFold>>, order: readonly UncertaintyMeasure[]): UncertaintyMeasure {
  let best: { m: UncertaintyMeasure; auroc: number } | null = null;
  for (const m of order) {
    const a = folds[m]?.validationAuroc;
    if (a === null || a === undefined) continue;
    if (best === null || a > best.auroc + 1e-12) best = { m, auroc: a };
  }
  return best?.m ?? order[0];
}

const r4 = (x: number | null) => (x === null || !Number.isFinite(x) ? null : Number(x.toFixed(4)));

/** Mean over folds (and sd) of one rate's outcomes, plus the pooled accuracies (sums over folds). */
export function summarizeSelective(outcomes: readonly SelectiveOutcome[]) {
  const ms = (f: (o: SelectiveOutcome) => number | null): MeanStd => meanStd(outcomes.map(f));
  const unflagged = ms((o) => o.accuracyUnflagged);
  const all = ms((o) => o.accuracyAll);
  const gain = ms((o) => (o.accuracyUnflagged === null ? null : o.accuracyUnflagged - o.accuracyAll));
  const sum = (f: (o: SelectiveOutcome) => number) => outcomes.reduce((s, o) => s + f(o), 0);
  const pooledUnflagged = sum((o) => o.unflagged) > 0 ? sum((o) => o.unflaggedCorrect) / sum((o) => o.unflagged) : null;
  const pooledAll = sum((o) => o.images) > 0 ? sum((o) => o.correct) / sum((o) => o.images) : null;
  return {
    accuracyUnflagged: r4(unflagged.mean),
    accuracyAll: r4(all.mean),
    reviewRate: r4(ms((o) => o.reviewRate).mean),
    gain: r4(gain.mean),
    gainSd: r4(gain.std),
    patientAccuracyUnflagged: r4(ms((o) => o.patientAccuracyUnflagged).mean),
    patientAccuracyAll: r4(ms((o) => o.patientAccuracyAll).mean),
    pooled: {
      accuracyUnflagged: r4(pooledUnflagged),
      accuracyAll: r4(pooledAll),
      reviewRate: r4(sum((o) => o.images) > 0 ? 1 - sum((o) => o.unflagged) / sum((o) => o.images) : null),
    },
    folds: unflagged.n,
  };
}

/** The targets: temperature scaling at least halves the ECE; at 20 % review, unflagged >= 5 points above all. */
export function targets(eceBefore: number, eceAfter: number, gainAt20: number | null): { eceHalved: boolean; reviewGain5Points: boolean } {
  return { eceHalved: eceAfter <= eceBefore / 2, reviewGain5Points: gainAt20 !== null && gainAt20 >= 0.05 - 1e-12 };
}
