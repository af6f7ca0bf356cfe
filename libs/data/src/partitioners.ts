import { STAGE1_CLASSES, ValidationError } from '@histofed/fl-core';
import {
  BREAKHIS_MAGNIFICATIONS,
  BREAKHIS_SUBTYPES,
  type BreakHisLabel,
  type BreakHisMagnification,
  type BreakHisSubtypeCode,
} from './breakhis-names';
import type { BreakHisImage } from './breakhis-reader';
import { DataError } from './data-error';
import { hashSeed, mulberry32, seededShuffle } from './prng';
import { checkSeed, groupByCase, imagesOf, patientWiseSplit, simulateFederation, type CaseGroup } from './splits';
import { siteStainShift, type StainShift } from './stain/stain-shift';

/**
 * Simulated hospitals. BreakHis comes from one laboratory, so a federation is simulated by dealing
 * its cases to sites; the four kinds reproduce the heterogeneity real hospitals have:
 *
 * - `iid`: cases dealt at random, labels balanced (exactly simulateFederation).
 * - `label-skew`: for each label a Dirichlet(alpha) draw decides the share of that label's cases each
 *   site gets (Hsu et al. 2019): small alpha (0.1) gives sites with mostly one class, large alpha
 *   (100) is close to IID.
 * - `magnification`: site i sees only magnification [40, 100, 200, 400][i mod 4] (as if each hospital
 *   scanned at one objective). Cases are dealt so that each goes to a site whose magnification it
 *   has images of (see partitionSites); its images at other magnifications are left unused, since a
 *   case never crosses sites.
 * - `stain`: IID cases, plus a fixed per-site H&E stain shift (siteStainShift) to apply to the
 *   site's pixels at load time (applyStainShift).
 *
 * Whatever the kind, the test cases are held out first exactly as patientWiseSplit (and
 * simulateFederation) do with the same seed and testFraction, so all kinds and the coordinator's
 * central evaluation share one test set. The unit dealt is always a case, so no patient or case is
 * at two sites or at a site and in test. Everything is deterministic from the seed and independent
 * of the input order of the images.
 */
export type PartitionKind = 'iid' | 'label-skew' | 'magnification' | 'stain';

export const PARTITION_KINDS: readonly PartitionKind[] = ['iid', 'label-skew', 'magnification', 'stain'];

export interface PartitionOptions {
  readonly kind: PartitionKind;
  /** Number of sites, >= 1. */
  readonly sites: number;
  readonly seed: number;
  /** Share of each label's cases held out for the central test set, in [0, 1). */
  readonly testFraction: number;
  /** Dirichlet concentration for `label-skew`, > 0; default 0.5. */
  readonly alpha?: number;
}

/** Counts of one part (a site or the test set). */
export interface PartSummary {
  readonly images: number;
  /** Distinct slide codes (BreakHis "patients"). */
  readonly patients: number;
  /** Distinct case numbers. */
  readonly cases: number;
  /** Images per label. */
  readonly byLabel: Record<BreakHisLabel, number>;
  /** Cases per label (a case's label is that of most of its images). */
  readonly casesByLabel: Record<BreakHisLabel, number>;
  /** Images per subtype code, all eight listed. */
  readonly bySubtype: Record<BreakHisSubtypeCode, number>;
  /** Images per magnification (`40X` ... `400X`), all four listed. */
  readonly byMagnification: Record<string, number>;
}

export interface SiteSummary extends PartSummary {
  /** 0-based site index. */
  readonly site: number;
  /** For `magnification`: the only magnification this site holds. */
  readonly magnification?: BreakHisMagnification;
  /** For `stain`: the site's stain shift in short (angles in degrees, concentration scales). */
  readonly stainShift?: { readonly rotationDegrees: [number, number]; readonly concentrationScale: [number, number] };
}

export interface PartitionReport {
  readonly kind: PartitionKind;
  readonly seed: number;
  readonly testFraction: number;
  /** For `label-skew`: the Dirichlet alpha used. */
  readonly alpha?: number;
  readonly test: PartSummary;
  readonly sites: SiteSummary[];
  /**
   * Training images (and whole cases) no site holds. Only `magnification` leaves any: the images of
   * a site's cases at other magnifications, and cases with no image at any site's magnification.
   */
  readonly unused: { readonly images: number; readonly cases: number };
}

export interface SitePartition {
  readonly kind: PartitionKind;
  /** Held-out test images (the coordinator's central test set), input order. */
  readonly test: BreakHisImage[];
  /** Each site's images, input order. */
  readonly sites: BreakHisImage[][];
  /** For `magnification`: site i's magnification. */
  readonly siteMagnifications?: BreakHisMagnification[];
  /** For `stain`: site i's stain shift, to apply to its pixels at load time. */
  readonly stainShifts?: StainShift[];
  readonly summary: PartitionReport;
}

/** Deals the training cases to sites as `kind` says; see PartitionKind. */
export function partitionSites(images: readonly BreakHisImage[], options: PartitionOptions): SitePartition {
  const { kind, sites, seed, testFraction } = options;
  if (!PARTITION_KINDS.includes(kind)) {
    throw new ValidationError(`partition kind must be one of ${PARTITION_KINDS.join(', ')}, got ${JSON.stringify(kind)}`);
  }
  if (!Number.isInteger(sites) || sites < 1) throw new ValidationError(`sites must be a positive integer, got ${sites}`);
  checkSeed(seed);
  const alpha = options.alpha ?? 0.5;
  if (kind === 'label-skew' && !(alpha > 0 && Number.isFinite(alpha))) {
    throw new ValidationError(`alpha must be a positive number, got ${options.alpha}`);
  }

  let test: BreakHisImage[];
  let siteImages: BreakHisImage[][];
  let siteMagnifications: BreakHisMagnification[] | undefined;
  let stainShifts: StainShift[] | undefined;
  let train: BreakHisImage[];
  if (kind === 'iid' || kind === 'stain') {
    const fed = simulateFederation(images, { sites, seed, testFraction });
    test = fed.test;
    siteImages = fed.sites;
    const held = new Set(test);
    train = images.filter((i) => !held.has(i));
    if (kind === 'stain') stainShifts = siteImages.map((_, i) => siteStainShift(i, seed));
  } else {
    ({ train, test } = patientWiseSplit(images, { testFraction, seed }));
    const groups = groupByCase(train);
    if (groups.length < sites) {
      throw new DataError(
        `Cannot simulate ${sites} sites: only ${groups.length} training case${groups.length === 1 ? '' : 's'} ` +
          `(after holding out ${testFraction} for test); every site needs at least one case`,
      );
    }
    if (kind === 'label-skew') {
      siteImages = dealLabelSkew(groups, sites, seed, alpha).map((ids) => imagesOf(train, ids));
    } else {
      siteMagnifications = Array.from({ length: sites }, (_, i) => BREAKHIS_MAGNIFICATIONS[i % BREAKHIS_MAGNIFICATIONS.length]);
      const mags = siteMagnifications;
      siteImages = dealByMagnification(groups, mags, seed).map((ids, i) =>
        imagesOf(train, ids).filter((img) => img.magnification === mags[i]),
      );
    }
  }

  const used = siteImages.reduce((a, s) => a + s.length, 0);
  const usedCases = new Set(siteImages.flatMap((s) => s.map((i) => i.caseId)));
  const summary: PartitionReport = {
    kind,
    seed,
    testFraction,
    ...(kind === 'label-skew' ? { alpha } : {}),
    test: summarizePart(test),
    sites: siteImages.map((part, i) => ({
      site: i,
      ...(siteMagnifications ? { magnification: siteMagnifications[i] } : {}),
      ...(stainShifts
        ? { stainShift: { rotationDegrees: stainShifts[i].rotationDegrees, concentrationScale: stainShifts[i].concentrationScale } }
        : {}),
      ...summarizePart(part),
    })),
    unused: { images: train.length - used, cases: new Set(train.map((i) => i.caseId)).size - usedCases.size },
  };
  return {
    kind,
    test,
    sites: siteImages,
    ...(siteMagnifications ? { siteMagnifications } : {}),
    ...(stainShifts ? { stainShifts } : {}),
    summary,
  };
}

/** Counts of images, patients, cases, labels, subtypes and magnifications of one part. */
export function summarizePart(part: readonly BreakHisImage[]): PartSummary {
  const byLabel = Object.fromEntries(STAGE1_CLASSES.map((l) => [l, 0])) as Record<BreakHisLabel, number>;
  const casesByLabel = { ...byLabel };
  const bySubtype = Object.fromEntries(BREAKHIS_SUBTYPES.map((s) => [s.code, 0])) as Record<BreakHisSubtypeCode, number>;
  const byMagnification = Object.fromEntries(BREAKHIS_MAGNIFICATIONS.map((m) => [`${m}X`, 0]));
  for (const image of part) {
    byLabel[image.label]++;
    bySubtype[image.subtype]++;
    byMagnification[`${image.magnification}X`]++;
  }
  for (const g of groupByCase(part)) casesByLabel[g.label]++;
  return {
    images: part.length,
    patients: new Set(part.map((i) => i.patientId)).size,
    cases: new Set(part.map((i) => i.caseId)).size,
    byLabel,
    casesByLabel,
    bySubtype,
    byMagnification,
  };
}

// ---------------------------------------------------------------------------------------------
// Random draws

/** A standard normal draw (Box-Muller) from a uniform generator. */
function normal(rand: () => number): number {
  const u = 1 - rand(); // (0, 1]
  const v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/**
 * The natural logarithm of a Gamma(shape, 1) draw, by Marsaglia & Tsang (2000); for shape < 1 the
 * boost Gamma(shape) = Gamma(shape + 1) * U^(1/shape), kept in log space so tiny shapes (alpha
 * 0.01) do not underflow to 0.
 */
export function logGammaSample(shape: number, rand: () => number): number {
  if (!(shape > 0)) throw new ValidationError(`gamma shape must be positive, got ${shape}`);
  if (shape < 1) return logGammaSample(shape + 1, rand) + Math.log(1 - rand()) / shape;
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = normal(rand);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rand();
    if (u < 1 - 0.0331 * x * x * x * x || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return Math.log(d * v);
  }
}

/** A draw from the symmetric Dirichlet(alpha, ..., alpha) over k categories (sums to 1). */
export function dirichletSample(k: number, alpha: number, rand: () => number): number[] {
  if (!Number.isInteger(k) || k < 1) throw new ValidationError(`k must be a positive integer, got ${k}`);
  const logs = Array.from({ length: k }, () => logGammaSample(alpha, rand));
  const max = Math.max(...logs);
  const w = logs.map((l) => Math.exp(l - max));
  const sum = w.reduce((a, b) => a + b, 0);
  return w.map((x) => x / sum);
}

/** Integer counts summing to `total` in proportion to `shares` (largest remainder, ties to the lower index). */
function apportion(total: number, shares: readonly number[]): number[] {
  const quota = shares.map((s) => s * total);
  const counts = quota.map((q) => Math.floor(q));
  let missing = total - counts.reduce((a, b) => a + b, 0);
  const order = quota.map((_, i) => i).sort((a, b) => quota[b] - counts[b] - (quota[a] - counts[a]) || a - b);
  for (const i of order) {
    if (missing <= 0) break;
    counts[i]++;
    missing--;
  }
  return counts;
}

// ---------------------------------------------------------------------------------------------
// Dealing cases

/**
 * Label skew: for each label, a Dirichlet(alpha) draw gives each site's share of that label's
 * (seeded-shuffled) cases, turned into case counts by largest remainder. Then, while a site has no
 * case and another has two or more, the fullest site (by cases; ties: lowest index) gives it one
 * case of its more frequent label -- so every site is non-empty whenever there are at least as
 * many cases as sites.
 */
function dealLabelSkew(groups: readonly CaseGroup[], sites: number, seed: number, alpha: number): Set<string>[] {
  const siteCases: CaseGroup[][] = Array.from({ length: sites }, () => []);
  for (const label of STAGE1_CLASSES) {
    const cases = seededShuffle(
      groups.filter((g) => g.label === label),
      mulberry32(hashSeed(seed, 'label-skew', label)),
    );
    const shares = dirichletSample(sites, alpha, mulberry32(hashSeed(seed, 'dirichlet', label, sites)));
    let next = 0;
    apportion(cases.length, shares).forEach((count, site) => {
      siteCases[site].push(...cases.slice(next, next + count));
      next += count;
    });
  }
  for (;;) {
    const empty = siteCases.findIndex((s) => s.length === 0);
    if (empty < 0) break;
    let donor = 0;
    siteCases.forEach((s, i) => {
      if (s.length > siteCases[donor].length) donor = i;
    });
    if (siteCases[donor].length < 2) break;
    const benign = siteCases[donor].filter((g) => g.label === 'benign').length;
    const give: BreakHisLabel = benign * 2 > siteCases[donor].length ? 'benign' : 'malignant';
    const at = siteCases[donor].map((g) => g.label).lastIndexOf(give);
    siteCases[empty].push(...siteCases[donor].splice(at, 1));
  }
  return siteCases.map((list) => new Set(list.map((g) => g.caseId)));
}

/**
 * Magnification: site i keeps only images at mags[i]. Each label's cases, in a seeded random
 * order, go one by one to a site whose magnification the case has images of, choosing the site with
 * the fewest cases of that label so far, then the fewest images, then the one the case gives the
 * most images, then the lowest index. That keeps both labels at every site where the data allow it
 * and uses far more images than dealing IID and then filtering. Cases with no image at any site's
 * magnification go nowhere (reported as unused).
 */
function dealByMagnification(groups: readonly CaseGroup[], mags: readonly BreakHisMagnification[], seed: number): Set<string>[] {
  const sites = mags.length;
  const siteCases = Array.from({ length: sites }, () => new Set<string>());
  const imagesAt = new Array<number>(sites).fill(0);
  for (const label of STAGE1_CLASSES) {
    const ofLabel = new Array<number>(sites).fill(0);
    const cases = seededShuffle(
      groups.filter((g) => g.label === label),
      mulberry32(hashSeed(seed, 'magnification', label)),
    );
    for (const g of cases) {
      let best = -1;
      let bestGain = 0;
      for (let i = 0; i < sites; i++) {
        const gain = g.images.filter((img) => img.magnification === mags[i]).length;
        if (gain === 0) continue;
        const better =
          best < 0 ||
          ofLabel[i] < ofLabel[best] ||
          (ofLabel[i] === ofLabel[best] && (imagesAt[i] < imagesAt[best] || (imagesAt[i] === imagesAt[best] && gain > bestGain)));
        if (better) {
          best = i;
          bestGain = gain;
        }
      }
      if (best < 0) continue;
      siteCases[best].add(g.caseId);
      ofLabel[best]++;
      imagesAt[best] += bestGain;
    }
  }
  return siteCases;
}
