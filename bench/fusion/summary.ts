/** The pure part of bench:fusion: per-fold scores into the JSON and its verdicts. */
import { meanStd, type MeanStd } from '../accuracy/stats';

export const TABLES = ['informative', 'uninformative'] as const;
export type Table = (typeof TABLES)[number];
/**
 * image: the default heads, no clinical data; tabular: the fusion heads with the image features set
 * to 0; fused / fusedGated: both; fusedSelected: per fold, fused if its validation loss beat the image
 * model's, else the image model (the choice made on validation patients only); fusedGuarded: the
 * fused model with every patient on its no-record path where that gave the lower validation loss
 * (one model: its records are used only where the validation patients say they help).
 */
export const MODELS = ['image', 'tabular', 'fused', 'fusedGated', 'fusedSelected', 'fusedGuarded'] as const;
export type FusionModel = (typeof MODELS)[number];

export interface FoldScore {
  readonly seed: number;
  readonly fold: number;
  readonly table: Table;
  readonly model: FusionModel;
  readonly balancedAccuracy: number;
  readonly auc: number | null;
}

export interface FusionSummary {
  /** The figures: stage-1 balanced accuracy, fold means. */
  readonly informative: Record<FusionModel, number>;
  readonly uninformative: Record<FusionModel, number>;
  /** Mean ± sd (and AUC) per table and model. */
  readonly details: Record<Table, Record<FusionModel, { balancedAccuracy: MeanStd; auc: MeanStd }>>;
  /** Per fused variant: it beats both on the informative table; it does not hurt (>= image - 1 point) on the uninformative one. */
  readonly verdict: Record<'fused' | 'fusedGated' | 'fusedSelected' | 'fusedGuarded', { readonly beatsBoth: boolean; readonly doesNotHurt: boolean }>;
}

/** Scores of the image model are shared by both tables (it reads no clinical data): give them once with table 'informative'. */
export function summarizeFusion(scores: readonly FoldScore[]): FusionSummary {
  const of = (table: Table, model: FusionModel) => scores.filter((s) => s.model === model && (model === 'image' || s.table === table));
  const details = Object.fromEntries(
    TABLES.map((t) => [
      t,
      Object.fromEntries(MODELS.map((m) => [m, { balancedAccuracy: meanStd(of(t, m).map((s) => s.balancedAccuracy)), auc: meanStd(of(t, m).map((s) => s.auc)) }])),
    ]),
  ) as FusionSummary['details'];
  const means = (t: Table) => Object.fromEntries(MODELS.map((m) => [m, details[t][m].balancedAccuracy.mean])) as FusionSummary['informative'];
  const informative = means('informative');
  const uninformative = means('uninformative');
  return {
    informative,
    uninformative,
    details,
    verdict: Object.fromEntries(
      (['fused', 'fusedGated', 'fusedSelected', 'fusedGuarded'] as const).map((m) => [
        m,
        { beatsBoth: informative[m] > Math.max(informative.image, informative.tabular), doesNotHurt: uninformative[m] >= uninformative.image - 0.01 },
      ]),
    ) as FusionSummary['verdict'],
  };
}
