/**
 * The pure parts of bench:prune: the pruning levels of the schedule, the per-level summary over
 * folds (mean ± sample sd, paired differences to the unpruned model) and the target check.
 */
import { meanStd, pct, type MeanStd } from '../accuracy/stats';

export const RANKINGS = ['seGate', 'weightNorm'] as const;
export type Ranking = (typeof RANKINGS)[number];

export const LEVEL_IDS = ['full', 'halfMultiplyAdds', 'channels50', 'channels25'] as const;
export type LevelId = (typeof LEVEL_IDS)[number];

export interface Level {
  readonly id: LevelId;
  /** Filters per conv block at this level. */
  readonly filters: readonly number[];
}

const total = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/**
 * The levels in pruning order (most channels first; `full` first): each level's counts are capped by
 * the previous level's, so the schedule only removes channels. Ties keep the listed order.
 */
export function pruningSchedule(levels: readonly Level[]): Level[] {
  const full = levels.find((l) => l.id === 'full');
  if (full === undefined) throw new Error('pruningSchedule: no full level');
  const rest = levels.filter((l) => l.id !== 'full').map((l, i) => ({ l, i }));
  rest.sort((a, b) => total(b.l.filters) - total(a.l.filters) || a.i - b.i);
  const out: Level[] = [full];
  for (const { l } of rest) {
    if (l.filters.length !== full.filters.length) throw new Error(`pruningSchedule: level ${l.id} has ${l.filters.length} blocks, full has ${full.filters.length}`);
    const prev = out[out.length - 1].filters;
    out.push({ id: l.id, filters: l.filters.map((f, b) => Math.min(f, prev[b])) });
  }
  return out;
}

/** Bytes of one site's update per round: every weight as float32. */
export function updateBytes(weights: readonly { readonly values: { readonly length: number } }[]): number {
  return 4 * weights.reduce((n, t) => n + t.values.length, 0);
}

/** One fold's test scores of one ranking at one level. */
export interface LevelScore {
  readonly balancedAccuracy: number;
  readonly auc: number | null;
  /** Federated rounds run at this level (the unpruned model: its training; pruned: fine-tuning). */
  readonly rounds: number;
  readonly keptRound: number;
}

/** One fold: the unpruned model's scores and, per ranking, each pruned level's. */
export interface FoldPruning {
  readonly seed: number;
  readonly fold: number;
  readonly full: LevelScore;
  readonly pruned: Readonly<Record<Ranking, Partial<Record<LevelId, LevelScore>>>>;
}

/** What a level's shapes cost (the same for both rankings). */
export interface LevelCost {
  readonly filters: readonly number[];
  readonly parameters: number;
  readonly multiplyAdds: number;
  readonly updateBytes: number;
  /** Measured once (first fold): images/s of federated local training (data-parallel pool) and of inference. */
  readonly trainImagesPerSecond: number | null;
  readonly inferImagesPerSecond: number | null;
}

export interface LevelSummary {
  readonly id: LevelId;
  readonly cost: LevelCost;
  /** Fractions of the unpruned model's channels and multiply-adds. */
  readonly channelFraction: number;
  readonly multiplyAddsFraction: number;
  readonly balancedAccuracy: MeanStd;
  readonly auc: MeanStd;
  /** Paired per-fold difference to the unpruned model (level - full), balanced accuracy. */
  readonly balancedAccuracyChange: MeanStd;
}

export interface PruneSummary {
  readonly folds: number;
  readonly rankings: Readonly<Record<Ranking, LevelSummary[]>>;
  readonly target: Readonly<Record<Ranking, TargetCheck>>;
}

export interface TargetCheck {
  readonly level: 'halfMultiplyAdds';
  readonly multiplyAddsFraction: number;
  /** Mean balanced accuracy at half the multiply-adds minus the unpruned model's (points: x 100). */
  readonly balancedAccuracyChange: number;
  /** The target: at half the multiply-adds, balanced accuracy within 1 point of the unpruned model. */
  readonly met: boolean;
}

/** Within this (fraction) of the unpruned balanced accuracy: the 1 point. */
export const TARGET_TOLERANCE = 0.01;

/** Per ranking and level, mean ± sd over folds, with the paired change to the unpruned model and the target check. */
export function summarizePruning(schedule: readonly Level[], costs: Readonly<Partial<Record<LevelId, LevelCost>>>, folds: readonly FoldPruning[]): PruneSummary {
  const full = costs.full;
  if (full === undefined) throw new Error('summarizePruning: no cost of the full level');
  const fullChannels = total(full.filters);
  const rankings = {} as Record<Ranking, LevelSummary[]>;
  const target = {} as Record<Ranking, TargetCheck>;
  for (const ranking of RANKINGS) {
    rankings[ranking] = schedule.map((level) => {
      const cost = costs[level.id];
      if (cost === undefined) throw new Error(`summarizePruning: no cost of level ${level.id}`);
      const scores = folds.map((f) => (level.id === 'full' ? f.full : f.pruned[ranking][level.id]));
      const paired = folds.map((f, i) => {
        const s = scores[i];
        return s === undefined ? null : s.balancedAccuracy - f.full.balancedAccuracy;
      });
      return {
        id: level.id,
        cost,
        channelFraction: Number((total(cost.filters) / fullChannels).toFixed(4)),
        multiplyAddsFraction: Number((cost.multiplyAdds / full.multiplyAdds).toFixed(4)),
        balancedAccuracy: meanStd(scores.map((s) => s?.balancedAccuracy ?? null)),
        auc: meanStd(scores.map((s) => s?.auc ?? null)),
        balancedAccuracyChange: meanStd(paired),
      };
    });
    const half = rankings[ranking].find((l) => l.id === 'halfMultiplyAdds');
    if (half !== undefined) {
      const change = half.balancedAccuracyChange.mean;
      target[ranking] = {
        level: 'halfMultiplyAdds',
        multiplyAddsFraction: half.multiplyAddsFraction,
        balancedAccuracyChange: change,
        met: Number.isFinite(change) && change >= -TARGET_TOLERANCE - 1e-12,
      };
    }
  }
  return { folds: folds.length, rankings, target };
}

const LABELS: Record<LevelId, string> = {
  full: '100 % (unpruned)',
  halfMultiplyAdds: '1/2 mult-adds',
  channels50: '50 % channels',
  channels25: '25 % channels',
};

const rate = (x: number | null) => (x === null ? '-' : x.toFixed(0));

/** The human-readable table of one ranking. */
export function levelTable(summary: PruneSummary, ranking: Ranking): string[] {
  const head =
    `${'level'.padEnd(18)} ${'filters'.padEnd(12)} ${'chan.'.padStart(6)} ${'params'.padStart(8)} ${'mult-adds'.padStart(10)} ${'MA frac'.padStart(7)} ` +
    `${'update B'.padStart(9)} ${'train/s'.padStart(8)} ${'infer/s'.padStart(8)} ${'balanced %'.padStart(12)} ${'change pts'.padStart(12)} ${'AUC %'.padStart(12)}`;
  return [
    head,
    ...summary.rankings[ranking].map((l) => {
      const change = l.id === 'full' ? '' : `${(100 * l.balancedAccuracyChange.mean).toFixed(1)} ± ${(100 * l.balancedAccuracyChange.std).toFixed(1)}`;
      return (
        `${LABELS[l.id].padEnd(18)} ${l.cost.filters.join('/').padEnd(12)} ${(100 * l.channelFraction).toFixed(0).padStart(5)}% ${String(l.cost.parameters).padStart(8)} ` +
        `${(l.cost.multiplyAdds / 1e6).toFixed(2).padStart(9)}M ${l.multiplyAddsFraction.toFixed(2).padStart(7)} ${String(l.cost.updateBytes).padStart(9)} ` +
        `${rate(l.cost.trainImagesPerSecond).padStart(8)} ${rate(l.cost.inferImagesPerSecond).padStart(8)} ${pct(l.balancedAccuracy).padStart(12)} ${change.padStart(12)} ${pct(l.auc).padStart(12)}`
      );
    }),
  ];
}

/** "target (half the multiply-adds, within 1 point): met / not met" line of one ranking. */
export function targetLine(summary: PruneSummary, ranking: Ranking): string {
  const t = summary.target[ranking];
  if (t === undefined) return `${ranking}: no half-multiply-adds level`;
  return (
    `${ranking}: at ${(100 * t.multiplyAddsFraction).toFixed(0)} % of the multiply-adds, balanced accuracy ${t.balancedAccuracyChange >= 0 ? '+' : ''}${(100 * t.balancedAccuracyChange).toFixed(1)} points ` +
    `vs unpruned: target (within ${100 * TARGET_TOLERANCE} point) ${t.met ? 'MET' : 'NOT met'}`
  );
}
