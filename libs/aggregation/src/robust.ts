import { Metrics, NamedTensor, ValidationError, WeightSet } from '@histofed/fl-core';
import { selectSites } from './site-selection';
import { AggregateResult, RoundPlan, RoundPlanRequest, SiteResult, Strategy } from './strategy';
import { assertResultsMatchGlobal, weightedMetrics } from './weights-math';

/**
 * Rearranges a[lo..hi] (inclusive) so that a[k] is the value a full sort would put there, with
 * a[lo..k-1] <= a[k] <= a[k+1..hi] (Hoare quickselect, median-of-three pivot; expected O(n),
 * in place, no allocation). Values are expected finite: the coordinator rejects contributions
 * with NaN or infinities before they reach a strategy.
 */
export function selectInPlace(a: Float64Array, lo: number, hi: number, k: number): void {
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    let t: number;
    if (a[mid] < a[lo]) {
      t = a[mid];
      a[mid] = a[lo];
      a[lo] = t;
    }
    if (a[hi] < a[lo]) {
      t = a[hi];
      a[hi] = a[lo];
      a[lo] = t;
    }
    if (a[hi] < a[mid]) {
      t = a[hi];
      a[hi] = a[mid];
      a[mid] = t;
    }
    const pivot = a[mid];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (i <= hi && a[i] < pivot) i++;
      while (j >= lo && a[j] > pivot) j--;
      if (i <= j) {
        t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    // a[lo..j] <= pivot, a[i..hi] >= pivot, anything strictly between equals pivot.
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return;
  }
}

/**
 * Median of a[0..n-1] (n >= 1); for even n the mean of the two middle values. Reorders `a`.
 */
export function medianInPlace(a: Float64Array, n: number): number {
  const half = n >>> 1;
  if (n % 2 === 1) {
    selectInPlace(a, 0, n - 1, half);
    return a[half];
  }
  selectInPlace(a, 0, n - 1, half - 1);
  let upper = a[half];
  for (let i = half + 1; i < n; i++) if (a[i] < upper) upper = a[i];
  return (a[half - 1] + upper) / 2;
}

/**
 * Mean of a[0..n-1] without its `drop` smallest and `drop` largest values (2 * drop < n).
 * Reorders `a`.
 */
export function trimmedMeanInPlace(a: Float64Array, n: number, drop: number): number {
  if (drop > 0) {
    selectInPlace(a, 0, n - 1, drop);
    selectInPlace(a, drop, n - 1, n - 1 - drop);
  }
  let s = 0;
  for (let i = drop; i < n - drop; i++) s += a[i];
  return s / (n - 2 * drop);
}

/**
 * Base of the coordinate-wise robust aggregators: for every coordinate of every tensor, the site
 * values go into one reusable float64 buffer and `combine` reduces them to the new global value.
 * Unweighted on purpose: weighting by the sample count a site reports would let one site that
 * lies about its count (or simply has most of the data) dominate again, which is what these
 * aggregators are meant to prevent. Stateless; only for runs without secure aggregation, since
 * they need each site's individual weights.
 */
abstract class CoordinateWise implements Strategy {
  abstract readonly name: string;

  configureRound(request: RoundPlanRequest): RoundPlan {
    return selectSites(request);
  }

  protected abstract combine(values: Float64Array, n: number): number;

  aggregate(global: WeightSet, results: readonly SiteResult[]): AggregateResult {
    assertResultsMatchGlobal(this.name, global, results);
    const n = results.length;
    const buf = new Float64Array(n);
    const weights: NamedTensor[] = global.map((g, t) => {
      const cols = results.map((r) => r.weights[t].values);
      const out = new Float32Array(g.values.length);
      for (let j = 0; j < out.length; j++) {
        for (let i = 0; i < n; i++) buf[i] = cols[i][j];
        out[j] = this.combine(buf, n);
      }
      return { name: g.name, shape: [...g.shape], values: out };
    });
    return { weights };
  }

  aggregateMetrics(results: readonly SiteResult[]): Metrics {
    return weightedMetrics(results);
  }
}

export interface TrimmedMeanOptions {
  /**
   * Fraction of the sites dropped at each end, per coordinate: floor(trim * n) smallest and as many
   * largest values are ignored. In [0, 0.5); default 0.2. With fewer than 1 / trim sites nothing
   * is dropped (5 sites at 0.2 drop 1 at each end, 4 sites drop none: a plain mean).
   */
  readonly trim?: number;
}

export const TRIMMED_MEAN_DEFAULTS = { trim: 0.2 } as const;

/**
 * Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the floor(trim * n) largest
 * and smallest site values and take the unweighted mean of the rest. Tolerates up to
 * floor(trim * n) arbitrary (faulty or malicious) sites per coordinate.
 */
export class TrimmedMean extends CoordinateWise {
  readonly name = 'trimmed-mean';
  readonly trim: number;

  constructor(options: TrimmedMeanOptions = {}) {
    super();
    const trim = options.trim ?? TRIMMED_MEAN_DEFAULTS.trim;
    if (typeof trim !== 'number' || !(trim >= 0 && trim < 0.5)) {
      throw new ValidationError(`strategy "trimmed-mean": option "trim" must be a number in [0, 0.5), got ${String(trim)}`);
    }
    this.trim = trim;
  }

  /** How many values are dropped at each end with n sites. */
  dropCount(n: number): number {
    return Math.floor(this.trim * n);
  }

  protected combine(values: Float64Array, n: number): number {
    return trimmedMeanInPlace(values, n, this.dropCount(n));
  }
}

/**
 * Coordinate-wise median (Yin et al. 2018): per coordinate, the unweighted median of the site
 * values; with an even number of sites, the mean of the two middle values. Tolerates fewer than
 * half of the sites being arbitrary.
 */
export class CoordinateMedian extends CoordinateWise {
  readonly name = 'median';

  protected combine(values: Float64Array, n: number): number {
    return medianInPlace(values, n);
  }
}
