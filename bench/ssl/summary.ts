/**
 * The pure parts of bench:ssl: which training patients are labelled at each label fraction, the
 * per-arm summary over folds (mean ± sample sd of stage-1 balanced accuracy and AUC, probe and
 * fine-tuning), the paired SSL-minus-ImageNet change, the human table and the --json object.
 */
import { mulberry32 } from '@histofed/ml';
import { meanStd, pct, type MeanStd } from '../accuracy/stats';

export const ARMS = ['imagenet', 'imagenetSsl', 'randomSsl'] as const;
export type Arm = (typeof ARMS)[number];

export const LABEL_FRACTIONS = [0.1, 0.25, 1] as const;
export type LabelFraction = (typeof LABEL_FRACTIONS)[number];
/** The JSON keys of the label fractions: "0.1", "0.25", "1". */
export const labelKey = (f: number): string => String(f);

export const EVALUATIONS = ['probe', 'fineTune'] as const;
export type Evaluation = (typeof EVALUATIONS)[number];

/** A training patient (the fold's unit: a BreakHis case) and its stage-1 class (0 benign, 1 malignant). */
export interface LabelledUnit {
  readonly id: string;
  readonly label: number;
}

/**
 * The labelled patients at each fraction: per class, the patients in a seeded random order, of which
 * the first max(1, round(fraction x n_class)) are labelled (at least one per class present; never
 * more than the class has). The subsets are nested (the 10 % patients are among the 25 % ones) so
 * the fractions differ only in how many labels they add. Deterministic from `seed`, independent of
 * the input order.
 */
export function labelledSubsets(units: readonly LabelledUnit[], fractions: readonly number[], seed: number): Map<number, Set<string>> {
  for (const f of fractions) if (!(f > 0 && f <= 1)) throw new Error(`labelledSubsets: fractions must be in (0, 1], got ${f}`);
  const ids = new Set<string>();
  for (const u of units) {
    if (ids.has(u.id)) throw new Error(`labelledSubsets: patient ${u.id} is listed twice`);
    ids.add(u.id);
  }
  const classes = [...new Set(units.map((u) => u.label))].sort((a, b) => a - b);
  const orders = classes.map((c) => {
    const members = units.filter((u) => u.label === c).map((u) => u.id).sort();
    const rand = mulberry32((seed ^ Math.imul(c + 1, 0x9e3779b1)) >>> 0);
    for (let i = members.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [members[i], members[j]] = [members[j], members[i]];
    }
    return members;
  });
  return new Map(fractions.map((f) => [f, new Set(orders.flatMap((m) => m.slice(0, Math.min(m.length, Math.max(1, Math.round(f * m.length))))))]));
}

/** One fold's test score of one arm, one evaluation, one label fraction. */
export interface Score {
  readonly balancedAccuracy: number;
  readonly auc: number | null;
}

export interface FoldResult {
  readonly seed: number;
  readonly fold: number;
  /** Labelled patients and images per label key. */
  readonly labelled: Readonly<Record<string, { readonly patients: number; readonly images: number }>>;
  /** scores[labelKey][arm][evaluation] */
  readonly scores: Readonly<Record<string, Partial<Record<Arm, Readonly<Record<Evaluation, Score>>>>>>;
}

export interface CellSummary {
  readonly balancedAccuracy: MeanStd;
  readonly auc: MeanStd;
}

export interface SslSummary {
  readonly folds: number;
  /** cells[labelKey][arm][evaluation] */
  readonly cells: Record<string, Partial<Record<Arm, Record<Evaluation, CellSummary>>>>;
  /** Per label key and evaluation: the paired per-fold change of balanced accuracy, SSL arm - imagenet. */
  readonly change: Record<string, Record<Evaluation, Partial<Record<'imagenetSsl' | 'randomSsl', MeanStd>>>>;
}

/** Mean ± sd over folds of every cell, and the paired changes to the ImageNet arm. */
export function summarizeSsl(folds: readonly FoldResult[], arms: readonly Arm[] = ARMS, fractions: readonly number[] = LABEL_FRACTIONS): SslSummary {
  const cells: SslSummary['cells'] = {};
  const change: SslSummary['change'] = {};
  for (const f of fractions) {
    const key = labelKey(f);
    cells[key] = {};
    change[key] = { probe: {}, fineTune: {} };
    for (const arm of arms) {
      const cell = {} as Record<Evaluation, CellSummary>;
      for (const e of EVALUATIONS) {
        const scores = folds.map((x) => x.scores[key]?.[arm]?.[e] ?? null);
        cell[e] = { balancedAccuracy: meanStd(scores.map((s) => s?.balancedAccuracy ?? null)), auc: meanStd(scores.map((s) => s?.auc ?? null)) };
        if ((arm === 'imagenetSsl' || arm === 'randomSsl') && arms.includes('imagenet')) {
          change[key][e][arm] = meanStd(
            folds.map((x) => {
              const s = x.scores[key]?.[arm]?.[e];
              const base = x.scores[key]?.imagenet?.[e];
              return s && base ? s.balancedAccuracy - base.balancedAccuracy : null;
            }),
          );
        }
      }
      cells[key][arm] = cell;
    }
  }
  return { folds: folds.length, cells, change };
}

const r4 = (x: number) => (Number.isFinite(x) ? Number(x.toFixed(4)) : null);

/**
 * The --json object: `labels` (the shape: fine-tuning's stage-1 balanced accuracy, fold
 * means, per label key and arm), `probe` (the same for the linear probe), `auc` (AUC fold means,
 * {fineTune, probe} of the same shape), `folds` and `seconds`.
 */
export function jsonResult(s: SslSummary, seconds: number) {
  const of = (e: Evaluation, what: keyof CellSummary) =>
    Object.fromEntries(Object.entries(s.cells).map(([key, arms]) => [key, Object.fromEntries(Object.entries(arms).map(([arm, c]) => [arm, r4(c[e][what].mean)]))]));
  return {
    labels: of('fineTune', 'balancedAccuracy'),
    probe: of('probe', 'balancedAccuracy'),
    auc: { fineTune: of('fineTune', 'auc'), probe: of('probe', 'auc') },
    folds: s.folds,
    seconds: Number(seconds.toFixed(1)),
  };
}

const LABEL_NAMES: Record<string, string> = { '0.1': '10 %', '0.25': '25 %', '1': '100 %' };
const EVAL_NAMES: Record<Evaluation, string> = { probe: 'probe', fineTune: 'fine-tune' };
const auc = (m: MeanStd) => (m.n === 0 ? '-' : (100 * m.mean).toFixed(1));

/** The human table: rows the label fractions; columns arm x {probe, fine-tune}: balanced accuracy % mean ± sd (AUC % mean). */
export function sslTable(s: SslSummary, arms: readonly Arm[] = ARMS): string[] {
  const W = 24;
  const cols = arms.flatMap((a) => EVALUATIONS.map((e) => `${a} ${EVAL_NAMES[e]}`));
  const lines = [`${'labels'.padEnd(7)} ${cols.map((c) => c.padStart(W)).join(' ')}`];
  for (const key of Object.keys(s.cells).sort((a, b) => Number(a) - Number(b))) {
    const byArm = s.cells[key];
    const cells = arms.flatMap((a) => EVALUATIONS.map((e) => {
      const c = byArm[a]?.[e];
      return c ? `${pct(c.balancedAccuracy)} (${auc(c.auc)})` : '-';
    }));
    lines.push(`${(LABEL_NAMES[key] ?? key).padEnd(7)} ${cells.map((c) => c.padStart(W)).join(' ')}`);
  }
  return lines;
}

/** The target at 10 % labels: the paired change of each SSL arm over ImageNet, per evaluation. */
export function targetLines(s: SslSummary): string[] {
  const ch = s.change[labelKey(0.1)];
  if (ch === undefined) return ['no 10 % label result'];
  const out: string[] = [];
  for (const e of EVALUATIONS) {
    for (const arm of ['imagenetSsl', 'randomSsl'] as const) {
      const m = ch[e][arm];
      if (m === undefined || m.n === 0) continue;
      const se = m.n > 1 ? m.std / Math.sqrt(m.n) : NaN;
      const verdict = !(m.mean > 0) ? 'NOT improved' : m.n < 3 ? 'higher, too few folds to tell' : Number.isFinite(se) && m.mean > 2 * se ? 'improved (beyond 2 standard errors)' : 'higher, but within 2 standard errors (noise)';
      out.push(
        `10 % labels, ${EVAL_NAMES[e]}: ${arm} - imagenet = ${m.mean >= 0 ? '+' : ''}${(100 * m.mean).toFixed(1)} ± ${(100 * m.std).toFixed(1)} points ` +
          `(paired over ${m.n} folds, standard error ${Number.isFinite(se) ? (100 * se).toFixed(1) : '-'}): ${verdict}`,
      );
    }
  }
  return out;
}
