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

/** The median of three values (comparisons only: exact). */
function medianOfThree(a: number, b: number, c: number): number {
  const lo = a < b ? a : b;
  const hi = a < b ? b : a;
  return c < lo ? lo : c > hi ? hi : c;
}

/** Where the last `partition` put its ends (ends[0] = l, ends[1] = r) and, for the first pass, how many values equal p (ends[2]). */
const ends = new Int32Array(3);

/**
 * Three-way partition of from[off+lo .. off+hi) around `p` into to[lo..hi): values < p first
 * (to[lo..l)), values > p last (to(r..hi)); the ranks l..r hold values equal to p. Every value is
 * written to both free ends and only the matching end advances, so the loop has no data-dependent
 * branch and random data costs no branch mispredictions (two values per iteration: less loop
 * overhead). With `countEqual`, ends[2] counts the values equal to p: fewer than r - l + 1 means
 * some value is NaN (neither below, above nor equal).
 */
function partition(from: Float64Array, off: number, to: Float64Array, lo: number, hi: number, p: number, countEqual = false): void {
  let l = lo;
  let r = hi - 1;
  let i = lo;
  for (; i + 1 < hi; i += 2) {
    const x = from[off + i];
    const y = from[off + i + 1];
    to[l] = x;
    to[r] = x;
    l += +(x < p);
    r -= +(x > p);
    to[l] = y;
    to[r] = y;
    l += +(y < p);
    r -= +(y > p);
  }
  if (i < hi) {
    const x = from[off + i];
    to[l] = x;
    to[r] = x;
    l += +(x < p);
    r -= +(x > p);
  }
  ends[0] = l;
  ends[1] = r;
  if (countEqual) {
    let equal = 0;
    for (let j = lo; j < hi; j++) equal += +(from[off + j] === p);
    ends[2] = equal;
  }
}

/** The value of rank k of a[lo..hi) (ranks counted from 0 at `lo`'s offset), using b[lo..hi) as scratch. */
function selectWithin(a: Float64Array, b: Float64Array, lo: number, hi: number, k: number): number {
  while (hi - lo > 1) {
    const p = medianOfThree(a[lo], a[(lo + hi) >>> 1], a[hi - 1]);
    partition(a, 0, b, lo, hi, p);
    const l = ends[0];
    const r = ends[1];
    if (k < l) hi = l;
    else if (k > r) lo = r + 1;
    else return p;
    const t = a;
    a = b;
    b = t;
  }
  return a[lo];
}

/**
 * The values of ranks k1 <= k2 (0-based, as in a full ascending sort) of src[off..off+n), into
 * out[0] and out[1], without modifying src; t1 and t2 are scratch arrays of length >= n.
 * Three-way quickselect: the partitions are shared while both ranks fall on the same side (the
 * two middle ranks of a median, or the two cut points of a trimmed mean, cost little more than
 * one selection). Exact: the results are values of src. If a value is NaN (no order), both
 * results are NaN.
 */
export function selectRanks(
  src: Float64Array,
  off: number,
  n: number,
  k1: number,
  k2: number,
  t1: Float64Array,
  t2: Float64Array,
  out: Float64Array,
): void {
  let p = medianOfThree(src[off], src[off + (n >>> 1)], src[off + n - 1]);
  partition(src, off, t1, 0, n, p, true);
  if (ends[2] !== ends[1] - ends[0] + 1) {
    out[0] = out[1] = NaN;
    return;
  }
  let lo = 0;
  let hi = n;
  let a = t1;
  let b = t2;
  for (;;) {
    const l = ends[0];
    const r = ends[1];
    if (k2 < l) hi = l;
    else if (k1 > r) lo = r + 1;
    else {
      // The ranks part here: each is p or lies in its own side, and the sides are disjoint.
      out[0] = k1 < l ? selectWithin(a, b, lo, l, k1) : p;
      out[1] = k2 > r ? selectWithin(a, b, r + 1, hi, k2) : p;
      return;
    }
    if (hi - lo === 1) {
      out[0] = out[1] = a[lo];
      return;
    }
    p = medianOfThree(a[lo], a[(lo + hi) >>> 1], a[hi - 1]);
    partition(a, 0, b, lo, hi, p);
    const t = a;
    a = b;
    b = t;
  }
}

/** Coordinates per block: n sites x BLOCK float64 values (100 KB at 50 sites) stay in L2. */
const BLOCK = 256;
/** 2^29: see TrimmedMean.combineBlock. */
const EXACT_RATIO = 2 ** 29;

/** Per-aggregation scratch buffers. */
class Scratch {
  readonly block: Float64Array;
  readonly t1: Float64Array;
  readonly t2: Float64Array;
  readonly values: Float64Array;
  readonly ranks = new Float64Array(2);
  constructor(readonly n: number) {
    this.block = new Float64Array(BLOCK * n);
    this.t1 = new Float64Array(n);
    this.t2 = new Float64Array(n);
    this.values = new Float64Array(n);
  }
}

/** block[j * n + site] = column[start + j] for j < m. */
function gatherColumn(block: Float64Array, column: Float32Array, start: number, m: number, site: number, n: number): void {
  for (let j = 0, o = site; j < m; j++, o += n) block[o] = column[start + j];
}

/**
 * Base of the coordinate-wise robust aggregators. Unweighted on purpose: weighting by the sample
 * count a site reports would let one site that lies about its count (or simply has most of the
 * data) dominate again, which is what these aggregators are meant to prevent. Stateless; only for
 * runs without secure aggregation, since they need each site's individual weights.
 *
 * `combine` is the definition: the site values of one coordinate, in site order (float64), reduce
 * to the new global value. `aggregate` returns exactly the float32 values a loop over `combine`
 * would, faster: BLOCK coordinates of every site at a time are copied into a coordinate-major
 * block, and `combineBlock` reduces each coordinate with selectRanks, handing a coordinate back to
 * `combine` (NaN result) whenever its shortcut might round differently, and wherever a site value
 * is NaN (selection needs an order; the coordinator rejects non-finite updates before they reach
 * a strategy anyway, but the result stays the reference's).
 */
abstract class CoordinateWise implements Strategy {
  abstract readonly name: string;

  configureRound(request: RoundPlanRequest): RoundPlan {
    return selectSites(request);
  }

  protected abstract combine(values: Float64Array, n: number): number;

  /**
   * out[start + j] for the m coordinates of the block (site values block[j*n .. j*n+n)): the value
   * `combine` returns for them, or NaN where `combine` must decide.
   */
  protected abstract combineBlock(block: Float64Array, m: number, out: Float32Array, start: number, scratch: Scratch): void;

  aggregate(global: WeightSet, results: readonly SiteResult[]): AggregateResult {
    assertResultsMatchGlobal(this.name, global, results);
    const n = results.length;
    const scratch = new Scratch(n);
    const { block, values } = scratch;
    const weights: NamedTensor[] = global.map((g, t) => {
      const cols = results.map((r) => r.weights[t].values);
      const length = g.values.length;
      const out = new Float32Array(length);
      for (let start = 0; start < length; start += BLOCK) {
        const m = Math.min(BLOCK, length - start);
        for (let i = 0; i < n; i++) gatherColumn(block, cols[i], start, m, i, n);
        this.combineBlock(block, m, out, start, scratch);
        for (let j = 0; j < m; j++) {
          if (out[start + j] === out[start + j]) continue;
          for (let i = 0; i < n; i++) values[i] = block[j * n + i];
          out[start + j] = this.combine(values, n);
        }
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

  /**
   * With d = dropCount(n) > 0: L and H, the values of ranks d and n-1-d, bound the kept values;
   * their sum is (values strictly between L and H) + (kept copies of L) * L + (kept copies of H) * H.
   * `combine` adds the kept values in the order its selection leaves them, and float64 addition
   * is order-independent only when every partial sum is exact. That holds when all kept values
   * are multiples of 2^(e-23) (e: exponent of the smallest nonzero |kept value|; float32 values
   * have 24-bit significands) and their absolute sum stays below 2^(e+30) (float64 significands
   * have 53 bits): count * max|kept| < min|kept| * 2^29 guarantees both. Otherwise (kept values
   * more than ~2^23 apart in magnitude, infinities) `combine` decides. With exact sums the zero's
   * sign matches too: both start from +0, and a zero sum in round-to-nearest is +0.
   * With d = 0 the mean is taken in site order, exactly as `combine` does.
   */
  protected combineBlock(block: Float64Array, m: number, out: Float32Array, start: number, scratch: Scratch): void {
    const { n, t1, t2, ranks } = scratch;
    const d = this.dropCount(n);
    const keep = n - 2 * d;
    for (let j = 0; j < m; j++) {
      const off = j * n;
      if (d === 0) {
        let s = 0;
        for (let i = 0; i < n; i++) s += block[off + i];
        out[start + j] = s / n;
        continue;
      }
      selectRanks(block, off, n, d, n - 1 - d, t1, t2, ranks);
      const lower = ranks[0];
      const upper = ranks[1];
      let between = 0;
      let atOrBelow = 0;
      let atOrAbove = 0;
      for (let i = 0; i < n; i++) {
        const x = block[off + i];
        between += x * (+(x > lower) & +(x < upper));
        atOrBelow += +(x <= lower);
        atOrAbove += +(x >= upper);
      }
      const largest = -lower > upper ? -lower : upper;
      let smallest = lower > 0 ? lower : upper < 0 ? -upper : Infinity;
      if (smallest === Infinity) {
        // The kept values straddle zero: the smallest nonzero magnitude among them.
        for (let i = 0; i < n; i++) {
          const x = block[off + i];
          const a = x < 0 ? -x : x;
          if (x >= lower && x <= upper && a > 0 && a < smallest) smallest = a;
        }
      }
      if (!(keep * largest < smallest * EXACT_RATIO)) out[start + j] = NaN;
      else if (lower === upper) out[start + j] = (0 + keep * lower) / keep;
      else out[start + j] = (between + (atOrBelow - d) * lower + (atOrAbove - d) * upper) / keep;
    }
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

  /**
   * Order statistics are exact whatever the algorithm, so the median is the same value; only a
   * zero middle value is left to `combine`, since which of -0 and +0 it returns depends on order.
   */
  protected combineBlock(block: Float64Array, m: number, out: Float32Array, start: number, scratch: Scratch): void {
    const { n, t1, t2, ranks } = scratch;
    const half = n >>> 1;
    const k1 = n % 2 === 1 ? half : half - 1;
    for (let j = 0; j < m; j++) {
      selectRanks(block, j * n, n, k1, half, t1, t2, ranks);
      const below = ranks[0];
      const above = ranks[1];
      out[start + j] = below === 0 || above === 0 ? NaN : k1 === half ? below : (below + above) / 2;
    }
  }
}
