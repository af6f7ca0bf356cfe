/**
 * The pure arithmetic of bench:domain: the combination chosen from validation results, the gap
 * recovered, the worst site's gap and the targets. No tfjs, no I/O (tested in summary.spec.ts).
 */
import type { MethodConfig, StainMethod } from './federation';

/** The single methods (each is FedAvg plus one change) and the combination. */
export const SINGLE_METHODS = ['fedavg', 'fedprox', 'fedbn', 'coral', 'mmd', 'stainTarget', 'stainAug'] as const;
export type SingleMethod = (typeof SINGLE_METHODS)[number];
export const COMBINED = 'combined';
export type Method = SingleMethod | typeof COMBINED;
export const METHODS: readonly Method[] = [...SINGLE_METHODS, COMBINED];

export interface MethodParameters {
  readonly mu: number;
  readonly lambda: number;
}

/** The configuration of a single method. */
export function singleMethodConfig(method: SingleMethod, p: MethodParameters): MethodConfig {
  const base: MethodConfig = { proximalMu: 0, fedbn: false, alignment: null, stain: 'none' };
  switch (method) {
    case 'fedavg':
      return base;
    case 'fedprox':
      return { ...base, proximalMu: p.mu };
    case 'fedbn':
      return { ...base, fedbn: true };
    case 'coral':
    case 'mmd':
      return { ...base, alignment: { method, lambda: p.lambda } };
    case 'stainTarget':
      return { ...base, stain: 'target' };
    case 'stainAug':
      return { ...base, stain: 'aug' };
  }
}

export interface Combination {
  /** The single methods whose change the combination takes. */
  readonly components: SingleMethod[];
  readonly config: MethodConfig;
  /** A single method when at most one change beat FedAvg on validation (nothing new to train), else null. */
  readonly sameAs: SingleMethod | null;
  readonly rule: string;
}

/**
 * The combination, chosen from the single methods' mean validation scores only (stage-1 balanced
 * accuracy on the pooled validation patients: higher is better; a method that was not run is
 * absent): each change whose method beat FedAvg's validation score joins — the proximal term (fedprox), FedBN, the better of CORAL and MMD, and the better of the
 * stain target and stain augmentation (alternatives: both at once would need a fourth feature
 * set). With one change or none, the combination is that method (or FedAvg) and is not trained again.
 */
export function chooseCombination(validationScore: Partial<Record<SingleMethod, number>>, p: MethodParameters): Combination {
  const base = validationScore.fedavg;
  if (base === undefined || !Number.isFinite(base)) throw new Error('chooseCombination: FedAvg\'s validation score is needed');
  const beats = (m: SingleMethod) => {
    const v = validationScore[m];
    return v !== undefined && Number.isFinite(v) && v > base;
  };
  const better = (a: SingleMethod, b: SingleMethod): SingleMethod | null => {
    const candidates = [a, b].filter(beats);
    if (candidates.length === 0) return null;
    return candidates.reduce((x, y) => ((validationScore[y] as number) > (validationScore[x] as number) ? y : x));
  };
  const components: SingleMethod[] = [];
  if (beats('fedprox')) components.push('fedprox');
  if (beats('fedbn')) components.push('fedbn');
  const align = better('coral', 'mmd');
  if (align) components.push(align);
  const stain = better('stainTarget', 'stainAug');
  if (stain) components.push(stain);
  const config: MethodConfig = {
    proximalMu: components.includes('fedprox') ? p.mu : 0,
    fedbn: components.includes('fedbn'),
    alignment: align === 'coral' || align === 'mmd' ? { method: align, lambda: p.lambda } : null,
    stain: (stain === 'stainTarget' ? 'target' : stain === 'stainAug' ? 'aug' : 'none') as StainMethod,
  };
  const sameAs: SingleMethod | null = components.length === 0 ? 'fedavg' : components.length === 1 ? components[0] : null;
  const rule = 'each change whose single method beat FedAvg\'s mean validation balanced accuracy (the better of CORAL/MMD and of stain target/augmentation)';
  return { components, config, sameAs, rule };
}

/** The method with the highest mean validation score (ties: the earlier in METHODS order). */
export function bestByValidation(validationScore: Partial<Record<Method, number>>): Method {
  let best: Method | null = null;
  for (const m of METHODS) {
    const v = validationScore[m];
    if (v === undefined || !Number.isFinite(v)) continue;
    if (best === null || v > (validationScore[best] as number)) best = m;
  }
  if (best === null) throw new Error('bestByValidation: no method has a validation score');
  return best;
}

/** Gaps smaller than this (balanced accuracy) are not divided by: the fraction would be noise. */
export const MIN_GAP = 0.01;

/**
 * (best - fedavgShift) / (fedavgIid - fedavgShift), or null when the IID ceiling is not above
 * FedAvg under the shift by more than MIN_GAP (no gap to recover).
 */
export function recoveredGapFraction(best: number, fedavgShift: number, fedavgIid: number): number | null {
  const gap = fedavgIid - fedavgShift;
  if (!(gap > MIN_GAP)) return null;
  return (best - fedavgShift) / gap;
}

/** The central figure minus the worst site's figure (sites without a figure are skipped); null without any site. */
export function worstSiteGap(central: number, perSite: readonly (number | null)[]): { gap: number; site: number } | null {
  let worst: { value: number; site: number } | null = null;
  perSite.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) return;
    if (worst === null || v < worst.value) worst = { value: v, site: i };
  });
  if (worst === null) return null;
  const w = worst as { value: number; site: number };
  return { gap: central - w.value, site: w.site };
}

export interface StainTargetCheck {
  readonly met: boolean | null;
  readonly recovered: boolean | null;
  readonly sites: boolean | null;
  readonly text: string;
}

/** Stain shift: the best method recovers >= 80 % of the gap and no site ends more than 5 points below the central figure. */
export function checkStainTarget(recovered: number | null, worstGap: number | null): StainTargetCheck {
  const r = recovered === null ? null : recovered >= 0.8;
  const s = worstGap === null ? null : worstGap <= 0.05;
  const met = r === null || s === null ? (r === false || s === false ? false : null) : r && s;
  const fmt = (x: number | null, f: (y: number) => string) => (x === null ? 'undefined' : f(x));
  const text =
    `recovered gap ${fmt(recovered, (x) => `${(100 * x).toFixed(0)} %`)} (target >= 80 %${r === null ? ': no gap to recover' : r ? ': met' : ': not met'}); ` +
    `worst site ${fmt(worstGap, (x) => `${(100 * x).toFixed(1)} points`)} below central (target <= 5${s === null ? '' : s ? ': met' : ': not met'})`;
  return { met, recovered: r, sites: s, text };
}

export interface SiteComparison {
  readonly site: number;
  readonly personalized: number | null;
  readonly localOnly: number | null;
}

/** Label skew: personalization + FedBN beats local-only (strictly) on every site that has both figures. */
export function checkPersonalization(sites: readonly SiteComparison[]): { met: boolean | null; beaten: number; tied: number; compared: number } {
  const both = sites.filter((s) => s.personalized !== null && s.localOnly !== null);
  const beaten = both.filter((s) => (s.personalized as number) > (s.localOnly as number) + 1e-9).length;
  const tied = both.filter((s) => Math.abs((s.personalized as number) - (s.localOnly as number)) <= 1e-9).length;
  return { met: both.length === 0 ? null : beaten === both.length, beaten, tied, compared: both.length };
}
