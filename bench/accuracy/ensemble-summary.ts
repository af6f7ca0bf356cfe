/**
 * Pure parts of bench:accuracy's ensemble report (ensemble.ts): the weights of a fitted weighted
 * mean over all members, and the summary over folds (per member and per combiner mean ± sd, the
 * best single member, the default combiner minus the best member).
 */
import { meanStd, pct, type MeanStd } from './stats';

/** Stage-1 balanced accuracy and expected calibration error of one model or combiner on a test fold. */
export interface EnsembleScore {
  readonly balancedAccuracy: number;
  readonly ece: number;
}

/** One fold's scores: per member id and per combiner name (member ids are the same in every fold). */
export interface FoldEnsembleScores {
  readonly members: Readonly<Record<string, EnsembleScore>>;
  readonly combiners: Readonly<Record<string, EnsembleScore>>;
}

export interface ScoreSummary {
  readonly balancedAccuracy: MeanStd;
  readonly ece: MeanStd;
}

export interface EnsembleSummary {
  readonly members: Record<string, ScoreSummary>;
  /** The member with the highest mean test balanced accuracy over folds (an oracle choice), among the members of every fold. */
  readonly bestMember: { readonly id: string } & ScoreSummary;
  readonly combiners: Record<string, ScoreSummary>;
  readonly default: string;
  /** Means over folds: the default combiner's minus the best member's (balanced accuracy: > 0 is better; ECE: < 0 is better). */
  readonly defaultMinusBestMember: EnsembleScore;
  /** As defaultMinusBestMember, against the member 'global' (the federated model alone), when there is one. */
  readonly defaultMinusGlobal: EnsembleScore | null;
}

const r4 = (x: number) => Number(x.toFixed(4));

function summarize(scores: readonly (EnsembleScore | undefined)[]): ScoreSummary {
  return {
    balancedAccuracy: meanStd(scores.map((s) => s?.balancedAccuracy ?? null)),
    ece: meanStd(scores.map((s) => s?.ece ?? null)),
  };
}

/**
 * Mean ± sample sd over folds of every member and combiner; the best member (highest mean balanced
 * accuracy among the members present in every fold; ties: lower mean ECE, then the earlier id); the
 * default combiner minus the best member and minus 'global'.
 */
export function summarizeEnsemble(folds: readonly FoldEnsembleScores[], defaultCombiner = 'mean'): EnsembleSummary {
  if (folds.length === 0) throw new Error('summarizeEnsemble: no folds');
  const ids = (pick: (f: FoldEnsembleScores) => Readonly<Record<string, EnsembleScore>>) => [...new Set(folds.flatMap((f) => Object.keys(pick(f))))];
  const memberIds = ids((f) => f.members);
  const combinerNames = ids((f) => f.combiners);
  if (!combinerNames.includes(defaultCombiner)) throw new Error(`summarizeEnsemble: no combiner '${defaultCombiner}'`);
  const members = Object.fromEntries(memberIds.map((id) => [id, summarize(folds.map((f) => f.members[id]))]));
  const combiners = Object.fromEntries(combinerNames.map((n) => [n, summarize(folds.map((f) => f.combiners[n]))]));
  const everywhere = memberIds.filter((id) => folds.every((f) => f.members[id] !== undefined));
  if (everywhere.length === 0) throw new Error('summarizeEnsemble: no member is present in every fold');
  let best = everywhere[0];
  for (const id of everywhere.slice(1)) {
    const a = members[id];
    const b = members[best];
    if (a.balancedAccuracy.mean > b.balancedAccuracy.mean || (a.balancedAccuracy.mean === b.balancedAccuracy.mean && a.ece.mean < b.ece.mean)) best = id;
  }
  const minus = (a: ScoreSummary, b: ScoreSummary): EnsembleScore => ({
    balancedAccuracy: r4(a.balancedAccuracy.mean - b.balancedAccuracy.mean),
    ece: r4(a.ece.mean - b.ece.mean),
  });
  const d = combiners[defaultCombiner];
  return {
    members,
    bestMember: { id: best, ...members[best] },
    combiners,
    default: defaultCombiner,
    defaultMinusBestMember: minus(d, members[best]),
    defaultMinusGlobal: members['global'] ? minus(d, members['global']) : null,
  };
}

/** The human summary's table: one line per member, then per combiner (percent, mean ± sd). */
export function ensembleTable(s: EnsembleSummary): string[] {
  const width = Math.max(12, ...[...Object.keys(s.members), ...Object.keys(s.combiners)].map((k) => k.length + 2));
  const line = (name: string, v: ScoreSummary, note = '') => `  ${name.padEnd(width)} ${pct(v.balancedAccuracy).padStart(13)} ${pct(v.ece).padStart(13)}${note}`;
  const signed = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}`;
  return [
    `  ${'member'.padEnd(width)} ${'balanced'.padStart(13)} ${'ECE'.padStart(13)}`,
    ...Object.entries(s.members).map(([id, v]) => line(id, v, id === s.bestMember.id ? '   <- best member (oracle pick on test)' : '')),
    `  ${'combiner'.padEnd(width)}`,
    ...Object.entries(s.combiners).map(([n, v]) => line(n, v, n === s.default ? '   <- default' : '')),
    `  default (${s.default}) - best member (${s.bestMember.id}): balanced accuracy ${signed(s.defaultMinusBestMember.balancedAccuracy)} points, ECE ${signed(s.defaultMinusBestMember.ece)} points` +
      (s.defaultMinusGlobal
        ? `; - global: ${signed(s.defaultMinusGlobal.balancedAccuracy)} / ${signed(s.defaultMinusGlobal.ece)} points`
        : ''),
  ];
}
