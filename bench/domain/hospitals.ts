/**
 * The simulated hospitals of bench:domain and what each reads from its images.
 *
 * Hospitals first, folds second: the whole sample is dealt once per shift to N hospitals with
 * libs/data's partitionSites (testFraction 0), so every patient belongs to one hospital and carries
 * that hospital's domain (its stain shift, its magnification, its case mix) whether it trains or
 * is tested. The cross-validation folds (patientWiseFolds over the whole sample) are the same for
 * every shift and method; a fold's test patients are tested where they live, so "per site" is each
 * hospital's own held-out patients and "central" is all of them together.
 *
 * Feature sets (tile features of the frozen backbone, through the on-disk feature cache, whose key
 * includes the pixel transform and the views' augmentation):
 * - plain: what the hospital's scanner produced (the stain shift applied for `stain`);
 * - target: after the shift, Macenko-normalized to the federated stain target;
 * - aug: the plain grid tiles with training views whose HED jitter is stronger (stain augmentation).
 */
import {
  DEFAULT_AUGMENTATION,
  TILE_VIEW_HED_SIGMA,
  TILE_VIEW_SEED,
  combineMacenkoTargets,
  createStainNormalizer,
  createStainShifter,
  loadTileSet,
  partitionSites,
  readImagePixels,
  siteStainShift,
  tryFitMacenko,
  type BreakHisImage,
  type FeatureCache,
  type ImageCache,
  type MacenkoTarget,
  type StainShift,
  type TileGeometry,
  type TileRowExtractor,
} from '@histofed/data';
import type { LabeledImages } from '@histofed/fl-core';
import { concatRows, rowsByImage, type DecodedSet } from '../accuracy/data-slices';

export const SHIFTS = ['stain', 'label-skew', 'magnification'] as const;
export type Shift = (typeof SHIFTS)[number];
export type HospitalKind = Shift | 'iid';

export interface Hospitals {
  readonly kind: HospitalKind;
  /** The partition seed used (the first from the requested one whose hospitals all hold enough patients). */
  readonly seed: number;
  /** Each hospital's images (magnification: only those at its magnification). */
  readonly sites: BreakHisImage[][];
  /** `stain`: each hospital's stain shift (scaled by the stain strength). */
  readonly stainShifts?: StainShift[];
  /** Site of each image path. */
  readonly siteOf: ReadonlyMap<string, number>;
  /** One line per hospital, for the log. */
  readonly describe: string[];
}

export interface HospitalOptions {
  readonly sites: number;
  readonly seed: number;
  readonly alpha: number;
  /** Every hospital must hold at least this many patients (else the next partition seed is tried). */
  readonly minPatients: number;
  /** Factor on the partitioner's stain-shift ranges (rotation 2-8 degrees, concentration change 10-20 %). */
  readonly stainStrength: number;
}

/**
 * The stain shift of hospital `site`: libs/data's siteStainShift with its default ranges scaled by
 * `strength` (strength 1 = exactly what partitionSites gives the site).
 */
export function scaledStainShift(site: number, seed: number, strength: number): StainShift {
  if (!(strength > 0 && strength <= 4)) throw new Error(`--stain-strength: expected a number in (0, 4], got ${strength}`);
  return siteStainShift(site, seed, { rotationDegrees: [2 * strength, 8 * strength], scaleChange: [0.1 * strength, 0.2 * strength] });
}

/**
 * Deals the sample to hospitals: partitionSites(kind, testFraction 0) with the first seed from
 * `o.seed` on (at most 100 tried) whose every hospital holds at least `o.minPatients` patients — a
 * rule on the partition's sizes only (a hospital of one patient cannot be cross-validated).
 */
export function dealHospitals(images: readonly BreakHisImage[], kind: HospitalKind, o: HospitalOptions): Hospitals {
  for (let seed = o.seed; seed < o.seed + 100; seed++) {
    const p = partitionSites(images, { kind, sites: o.sites, seed, testFraction: 0, alpha: o.alpha });
    const patients = p.sites.map((s) => new Set(s.map((i) => i.patientId)).size);
    if (Math.min(...patients) < o.minPatients) continue;
    const stainShifts = kind === 'stain' ? p.sites.map((_, i) => scaledStainShift(i, seed, o.stainStrength)) : undefined;
    const siteOf = new Map<string, number>();
    p.sites.forEach((s, i) => s.forEach((img) => siteOf.set(img.path, i)));
    const describe = p.summary.sites.map((s, i) => {
      const shift = stainShifts?.[i];
      return (
        `site ${i + 1}: ${s.patients} patients (${s.casesByLabel.benign} benign / ${s.casesByLabel.malignant} malignant cases), ${s.images} images` +
        (s.magnification ? `, ${s.magnification}X only` : '') +
        (shift
          ? `, stain shift H/E turned ${shift.rotationDegrees.map((d) => d.toFixed(1)).join('/')} deg, concentrations x${shift.concentrationScale.map((c) => c.toFixed(2)).join('/')}`
          : '')
      );
    });
    if (p.summary.unused.images > 0) describe.push(`unused: ${p.summary.unused.images} images (${p.summary.unused.cases} whole cases) at no hospital's magnification`);
    return { kind, seed, sites: p.sites, ...(stainShifts ? { stainShifts } : {}), siteOf, describe };
  }
  throw new Error(`${kind}: no partition seed in [${o.seed}, ${o.seed + 99}] gives every one of ${o.sites} hospitals ${o.minPatients} patients`);
}

/** How features are computed and cached (one extractor, one cache for the whole benchmark). */
export interface FeatureEnv {
  readonly extractor: TileRowExtractor;
  readonly cache?: FeatureCache;
  readonly imageCache?: ImageCache;
  readonly geometry: TileGeometry;
  readonly views: number;
  readonly log: (line: string) => void;
}

type Transform = { readonly key: string; readonly apply: (rgb: Float32Array) => Float32Array };

/** Each hospital's scanner: its stain shift (stain), else nothing. */
function scannerOf(h: Hospitals, site: number): { key: unknown; apply?: (rgb: Float32Array) => Float32Array } {
  const shift = h.stainShifts?.[site];
  if (!shift) return { key: null };
  const shifter = createStainShifter(shift);
  return { key: { stainShift: shift }, apply: (rgb) => shifter(rgb) };
}

function transformOf(h: Hospitals, site: number, target: MacenkoTarget | null): Transform | undefined {
  const scanner = scannerOf(h, site);
  if (!target) return scanner.apply ? { key: JSON.stringify([scanner.key, null]), apply: scanner.apply } : undefined;
  const normalize = createStainNormalizer(target);
  const shift = scanner.apply;
  return { key: JSON.stringify([scanner.key, target]), apply: (rgb) => normalize(shift ? shift(rgb) : rgb) };
}

async function loadPerSite(
  h: Hospitals,
  env: FeatureEnv,
  what: string,
  load: (images: BreakHisImage[], site: number, progress: (p: { images: number; total: number; cached: number }) => void) => Promise<LabeledImages>,
): Promise<{ data: LabeledImages; rowsOf: Map<string, number[]> }> {
  const t0 = Date.now();
  const total = h.sites.reduce((n, s) => n + s.length, 0);
  let before = 0;
  let cached = 0;
  let data: LabeledImages | null = null;
  for (let s = 0; s < h.sites.length; s++) {
    const part = await load(h.sites[s], s, (p) => {
      const done = before + p.images;
      if (p.images === p.total) cached += p.cached;
      if (done % 50 === 0 || done === total) env.log(`    ${what}: ${done}/${total} images, ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    });
    before += h.sites[s].length;
    data = data ? concatRows(data, part) : part;
  }
  env.log(`  ${what}: ${total} images (${cached} from the cache) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { data: data as LabeledImages, rowsOf: rowsByImage(data as LabeledImages, h.sites.flat()) };
}

function gridSet(h: Hospitals, env: FeatureEnv, target: MacenkoTarget | null, what: string) {
  return loadPerSite(h, env, what, (images, s, onProgress) =>
    loadTileSet(images, { geometry: env.geometry, extractor: env.extractor, cache: env.cache, transform: transformOf(h, s, target), onProgress }),
  );
}

function viewSet(h: Hospitals, env: FeatureEnv, target: MacenkoTarget | null, hedSigma: number, what: string) {
  return loadPerSite(h, env, what, (images, s, onProgress) =>
    loadTileSet(images, {
      geometry: env.geometry,
      extractor: env.extractor,
      cache: env.cache,
      transform: transformOf(h, s, target),
      grid: false,
      views: { views: env.views, seed: TILE_VIEW_SEED, augment: DEFAULT_AUGMENTATION, hedSigma },
      onProgress,
    }),
  );
}

/** The hospitals' images as their scanners made them: grid tiles + the default augmented views (HED sigma 0.05). */
export async function plainFeatures(h: Hospitals, env: FeatureEnv): Promise<DecodedSet> {
  const grid = await gridSet(h, env, null, `${h.kind} grid tiles`);
  const views = await viewSet(h, env, null, TILE_VIEW_HED_SIGMA, `${h.kind} training views`);
  return { ...grid, views };
}

/** Stain augmentation: the plain grid, training views with HED jitter `hedSigma`. */
export async function augmentedFeatures(h: Hospitals, env: FeatureEnv, plain: DecodedSet, hedSigma: number): Promise<DecodedSet> {
  const views = await viewSet(h, env, null, hedSigma, `${h.kind} training views, HED sigma ${hedSigma}`);
  return { data: plain.data, rowsOf: plain.rowsOf, views };
}

/** Every image after its hospital's scanner, normalized to `target` (grid and views). */
export async function targetFeatures(h: Hospitals, env: FeatureEnv, target: MacenkoTarget): Promise<DecodedSet> {
  const grid = await gridSet(h, env, target, `${h.kind} grid tiles, stain target`);
  const views = await viewSet(h, env, target, TILE_VIEW_HED_SIGMA, `${h.kind} training views, stain target`);
  return { ...grid, views };
}

/** Size at which a site decodes its images for its stain statistics (as the site client does). */
export const STAIN_STATISTICS_SIZE = 256;

/**
 * Each image's Macenko fit as its hospital sees it (after its scanner's shift), decoded at 256 px
 * like the site client's stain statistics; null for an image with too little tissue.
 */
export async function macenkoFits(h: Hospitals, imageCache: ImageCache | undefined): Promise<Map<string, MacenkoTarget | null>> {
  const pixels = new Float32Array(STAIN_STATISTICS_SIZE * STAIN_STATISTICS_SIZE * 3);
  const fits = new Map<string, MacenkoTarget | null>();
  for (let s = 0; s < h.sites.length; s++) {
    const scanner = scannerOf(h, s);
    const apply = scanner.apply;
    for (const image of h.sites[s]) {
      await readImagePixels(image, STAIN_STATISTICS_SIZE, pixels, { cache: imageCache, transform: apply ? (rgb) => apply(rgb) : undefined });
      fits.set(image.path, tryFitMacenko(pixels));
    }
  }
  return fits;
}

/**
 * The federated stain target from each site's images: a site combines the fits of its images
 * (combineMacenkoTargets: component-wise medians), the coordinator combines the sites' answers the
 * same way (what the run's federatedStainTarget does).
 */
export function federatedTarget(siteImages: readonly (readonly BreakHisImage[])[], fits: ReadonlyMap<string, MacenkoTarget | null>): MacenkoTarget {
  const answers = siteImages.map((images, s) => {
    const own = images.map((i) => fits.get(i.path)).filter((t): t is MacenkoTarget => t !== null && t !== undefined);
    if (own.length === 0) throw new Error(`stain target: site ${s + 1} has no image with enough tissue for a Macenko fit`);
    return combineMacenkoTargets(own);
  });
  return combineMacenkoTargets(answers);
}

/** How far apart two targets are: the larger stain-vector angle (degrees) and the larger relative change of a maximum concentration. */
export function targetDistance(a: MacenkoTarget, b: MacenkoTarget): { degrees: number; maxConcentration: number } {
  const angle = (u: readonly number[], v: readonly number[]) => (Math.acos(Math.min(1, u.reduce((s, x, i) => s + x * v[i], 0))) * 180) / Math.PI;
  return {
    degrees: Math.max(angle(a.stainMatrix[0], b.stainMatrix[0]), angle(a.stainMatrix[1], b.stainMatrix[1])),
    maxConcentration: Math.max(...[0, 1].map((k) => Math.abs(a.maxConcentrations[k] / b.maxConcentrations[k] - 1))),
  };
}
