/**
 * npm run bench:domain [-- --json]: domain adaptation under simulated hospital shifts on the real
 * BreakHis sample (issue 14, part 4). See bench/domain/README.md for the design.
 *
 * For each shift (stain, label-skew, magnification) the sample is dealt once to N hospitals
 * (hospitals.ts); the same patient-wise folds (folds x seeds) then train, per method, an in-process
 * federation (federation.ts) of the default model family — heads on frozen ImageNet MobileNetV2
 * tile features, with a batch-normalized hidden layer (denseUnits 32, batchNorm 1) for every
 * method — and test it on the fold's held-out patients, centrally and per hospital. FedAvg on IID
 * hospitals (no shift) is the ceiling. Progress on stderr; tables on stdout, or one JSON line on
 * stdout with --json.
 */
import { Command } from 'commander';
import * as os from 'node:os';
import * as path from 'node:path';
import { BREAKHIS_SUBTYPE_PARENTS, type ModelSpec, type NamedTensor } from '@histofed/fl-core';
import {
  DEFAULT_AUGMENTATION,
  FeatureCache,
  ImageCache,
  assertHasImages,
  defaultImageCacheDir,
  patientWiseFolds,
  patientWiseSplit,
  readBreakHisTree,
  type BreakHisImage,
  type MacenkoTarget,
} from '@histofed/data';
import {
  MOBILENET_V2_IMAGENET,
  buildModelAsync,
  createTrainingPool,
  getWeights,
  mixSeed,
  parseBackendChoice,
  resolveBackbone,
  selectBackend,
  tileFeatureExtractor,
  type TrainingPool,
} from '@histofed/ml';
import { reporter, runBench } from '../lib/bench-output';
import { slice, type DecodedSet } from '../accuracy/data-slices';
import { localOnly, type Recipe, type SiteData } from '../accuracy/regimes';
import { meanStd, type MeanStd } from '../accuracy/stats';
import { ensembleScores, federate, layoutOf, personalize, type FedRecipe, type FedResult, type FoldData, type MethodConfig, type Scores, type StainMethod } from './federation';
import {
  SHIFTS,
  augmentedFeatures,
  dealHospitals,
  federatedTarget,
  macenkoFits,
  plainFeatures,
  targetDistance,
  targetFeatures,
  type FeatureEnv,
  type HospitalKind,
  type HospitalOptions,
  type Hospitals,
} from './hospitals';
import {
  COMBINED,
  METHODS,
  SINGLE_METHODS,
  bestByValidation,
  checkPersonalization,
  checkStainTarget,
  chooseCombination,
  recoveredGapFraction,
  singleMethodConfig,
  worstSiteGap,
  type Combination,
  type Method,
} from './summary';
import { int, ints, num } from '../lib/cli-options';

const ROOT = path.resolve(__dirname, '../..');
const DEFAULT_SAMPLE = path.resolve(ROOT, '../shared/data/breakhis-sample');

interface Options {
  data: string;
  folds?: string;
  seeds?: string;
  rounds?: string;
  minRounds?: string;
  roundPatience?: string;
  localEpochs?: string;
  shifts: string;
  methods: string;
  sites: string;
  alpha: string;
  stainStrength: string;
  partitionSeed: string;
  minPatients: string;
  mu: string;
  lambda: string;
  hed: string;
  personalizeEpochs?: string;
  personalizeLr: string;
  localMaxEpochs?: string;
  valFraction: string;
  batch: string;
  lr: string;
  backend: string;
  cacheDir?: string;
  cache: boolean;
  quick?: boolean;
  json?: boolean;
}

function list<T extends string>(name: string, s: string, allowed: readonly T[]): T[] {
  const xs = s.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
  for (const x of xs) if (!(allowed as readonly string[]).includes(x)) throw new Error(`--${name}: ${x} is not one of ${allowed.join(', ')}`);
  return xs as T[];
}

/** One fold of one seed, the same for every shift and method. */
interface FoldKey {
  readonly seed: number;
  readonly fold: number;
  /** Seed of everything random in this fold (initial weights, validation splits, shuffles). */
  readonly foldSeed: number;
  readonly test: ReadonlySet<string>;
  readonly initial: NamedTensor[];
  readonly tag: string;
}

/** A hospital's patients in one fold, as images. */
interface SiteSplit {
  readonly train: BreakHisImage[];
  readonly validation: BreakHisImage[];
  readonly test: BreakHisImage[];
}

function splitSites(h: Hospitals, key: FoldKey, valFraction: number): SiteSplit[] {
  return h.sites.map((images, s) => {
    const test = images.filter((i) => key.test.has(i.path));
    const rest = images.filter((i) => !key.test.has(i.path));
    const split = rest.length > 0 ? patientWiseSplit(rest, { testFraction: valFraction, seed: mixSeed(key.foldSeed, 11 + s) }) : { train: [], test: [] };
    return { train: split.train, validation: split.test, test };
  });
}

function foldData(set: DecodedSet, splits: readonly SiteSplit[]): FoldData {
  const validation = splits.flatMap((s) => s.validation);
  const test = splits.flatMap((s) => s.test);
  if (validation.length === 0) throw new Error('no site has validation patients in this fold');
  return {
    sites: splits.map((s) => ({
      train: s.train.length > 0 ? slice(set, s.train, true) : slice(set, validation.slice(0, 0), true),
      trainImages: s.train.length,
      validation: s.validation.length > 0 ? slice(set, s.validation) : null,
      test: s.test.length > 0 ? slice(set, s.test) : null,
    })),
    validation: slice(set, validation),
    test: slice(set, test),
  };
}

/** What one method gave on one fold. */
interface FoldRecord {
  readonly seed: number;
  readonly fold: number;
  readonly central: Scores;
  readonly perSite: (Scores | null)[];
  readonly validationLoss: number;
  readonly validationBalancedAccuracy: number;
  readonly keptRound: number;
  readonly roundsRun: number;
}

const recordOf = (key: FoldKey, r: FedResult): FoldRecord => ({
  seed: key.seed,
  fold: key.fold,
  central: r.central,
  perSite: r.perSite,
  validationLoss: r.validationLoss,
  validationBalancedAccuracy: r.validationBalancedAccuracy,
  keptRound: r.keptRound,
  roundsRun: r.roundsRun,
});

const r4 = (x: number | null) => (x === null || !Number.isFinite(x) ? null : Number(x.toFixed(4)));
const pctOf = (m: MeanStd) => (m.n === 0 ? '-' : `${(100 * m.mean).toFixed(1)} ± ${(100 * m.std).toFixed(1)}`);

interface MethodSummary {
  readonly balancedAccuracy: MeanStd;
  readonly auc: MeanStd;
  readonly validationLoss: MeanStd;
  readonly validationBalancedAccuracy: MeanStd;
  readonly keptRound: MeanStd;
  readonly perSite: { balancedAccuracy: MeanStd; auc: MeanStd }[];
}

function summarize(records: readonly FoldRecord[], sites: number): MethodSummary {
  return {
    balancedAccuracy: meanStd(records.map((r) => r.central.balancedAccuracy)),
    auc: meanStd(records.map((r) => r.central.auc)),
    validationLoss: meanStd(records.map((r) => r.validationLoss)),
    validationBalancedAccuracy: meanStd(records.map((r) => r.validationBalancedAccuracy)),
    keptRound: meanStd(records.map((r) => r.keptRound)),
    perSite: Array.from({ length: sites }, (_, s) => ({
      balancedAccuracy: meanStd(records.map((r) => r.perSite[s]?.balancedAccuracy ?? null)),
      auc: meanStd(records.map((r) => r.perSite[s]?.auc ?? null)),
    })),
  };
}

const jsonOf = (m: MethodSummary) => ({
  balancedAccuracy: r4(m.balancedAccuracy.mean),
  balancedAccuracySd: r4(m.balancedAccuracy.std),
  auc: r4(m.auc.mean),
  aucSd: r4(m.auc.std),
  validationLoss: r4(m.validationLoss.mean),
  validationBalancedAccuracy: r4(m.validationBalancedAccuracy.mean),
  keptRound: r4(m.keptRound.mean),
  folds: m.balancedAccuracy.n,
  perSite: m.perSite.map((p, s) => ({
    site: s + 1,
    balancedAccuracy: r4(p.balancedAccuracy.mean),
    balancedAccuracySd: r4(p.balancedAccuracy.std),
    auc: r4(p.auc.mean),
    folds: p.balancedAccuracy.n,
  })),
});

function describeConfig(c: MethodConfig): string {
  const parts = [c.proximalMu > 0 ? `FedProx mu ${c.proximalMu}` : 'FedAvg'];
  if (c.fedbn) parts.push('FedBN');
  if (c.alignment) parts.push(`${c.alignment.method.toUpperCase()} lambda ${c.alignment.lambda}`);
  if (c.stain === 'target') parts.push('federated stain target');
  if (c.stain === 'aug') parts.push('stain augmentation');
  return parts.join(' + ');
}

async function main(o: Options): Promise<void> {
  const started = Date.now();
  const { say, result } = reporter(Boolean(o.json));
  const log = (line: string) => process.stderr.write(line + '\n');
  const quick = Boolean(o.quick);
  const k = int('folds', o.folds ?? '3', 2);
  const seeds = ints('seeds', o.seeds ?? (quick ? '1' : '1,2,3,4,5'), 0);
  const shifts = list('shifts', o.shifts, SHIFTS);
  const requested = list('methods', o.methods, METHODS);
  // FedAvg under the shift is the reference of every figure: always run.
  const methods: Method[] = METHODS.filter((m) => m === 'fedavg' || requested.includes(m));
  const nSites = int('sites', o.sites, 2);
  const hospitalOptions: HospitalOptions = {
    sites: nSites,
    seed: int('partition-seed', o.partitionSeed, 0),
    alpha: num('alpha', o.alpha, 1e-3),
    minPatients: int('min-patients', o.minPatients, 1),
    stainStrength: num('stain-strength', o.stainStrength, 0.01, 4),
  };
  const params = { mu: num('mu', o.mu, 0), lambda: num('lambda', o.lambda, 0) };
  const hedSigma = num('hed', o.hed, 0, 0.5);
  const valFraction = num('val-fraction', o.valFraction, 0.05, 0.5);
  const personalizeEpochs = int('personalize-epochs', o.personalizeEpochs ?? (quick ? '1' : '5'), 1);
  const personalizeLr = num('personalize-lr', o.personalizeLr, 1e-7, 1);
  const spec0: ModelSpec = {
    kind: 'backbone-head',
    imageSize: 224,
    numClasses: 2,
    subtypeParents: BREAKHIS_SUBTYPE_PARENTS,
    backbone: { name: MOBILENET_V2_IMAGENET, cut: 'block_10_depthwise_relu', input: 'signed' },
    tiles: { scale: 1, views: 8 },
    options: { denseUnits: 32, batchNorm: 1, dropout: 0.25 },
  };

  const dataset = assertHasImages(await readBreakHisTree(path.resolve(o.data)));
  const all = dataset.images;
  log(`data: ${all.length} images, ${new Set(all.map((i) => i.patientId)).size} patients (${o.data})`);
  const backend = await selectBackend(parseBackendChoice(o.backend));
  const resolved = await resolveBackbone(spec0.backbone as NonNullable<ModelSpec['backbone']>, {}, spec0.imageSize);
  const spec: ModelSpec = { ...spec0, backbone: resolved.spec };
  const recipe: FedRecipe = {
    spec,
    batchSize: int('batch', o.batch, 1),
    learningRate: num('lr', o.lr, 1e-6, 1),
    rounds: int('rounds', o.rounds ?? (quick ? '2' : '15'), 1),
    minRounds: int('min-rounds', o.minRounds ?? (quick ? '1' : '5'), 1),
    roundPatience: int('round-patience', o.roundPatience ?? (quick ? '1' : '4'), 1),
    localEpochs: int('local-epochs', o.localEpochs ?? (quick ? '1' : '2'), 1),
  };
  const localMaxEpochs = int('local-max-epochs', o.localMaxEpochs ?? (quick ? '2' : '30'), 1);
  const localRecipe: Recipe = {
    spec,
    batchSize: recipe.batchSize,
    learningRate: recipe.learningRate,
    maxEpochs: localMaxEpochs,
    patience: quick ? 1 : 8,
    minEpochs: Math.min(localMaxEpochs, quick ? 1 : 10),
    monitor: 'loss',
    rounds: recipe.rounds,
    localEpochs: recipe.localEpochs,
    roundPatience: recipe.roundPatience,
    minRounds: recipe.minRounds,
    proximalMu: 0,
    refit: true,
    augmentCopies: 1,
    augment: DEFAULT_AUGMENTATION,
  };
  const extractor = await tileFeatureExtractor(resolved.spec, spec.imageSize);
  const cacheRoot = o.cacheDir ?? defaultImageCacheDir();
  const env: FeatureEnv = {
    extractor,
    cache: o.cache ? new FeatureCache(o.cacheDir ? { dir: path.join(o.cacheDir, 'features') } : {}) : undefined,
    imageCache: o.cache ? new ImageCache({ dir: cacheRoot }) : undefined,
    geometry: { size: spec.imageSize, scale: 1 },
    views: 8,
    log,
  };
  log(
    `backend ${backend.name}; model ${spec.kind} ${JSON.stringify(spec.options)} on ${resolved.spec.cut} features of 224 px tiles; ` +
      `${k} folds x seeds ${seeds.join(',')}; ${nSites} hospitals; rounds <= ${recipe.rounds} (kept from ${recipe.minRounds}, patience ${recipe.roundPatience}) x ${recipe.localEpochs} local epochs; ` +
      `mu ${params.mu}, lambda ${params.lambda}, HED sigma ${hedSigma}, stain strength ${hospitalOptions.stainStrength}`,
  );

  const evalModel = await buildModelAsync(spec, 1);
  let pool: TrainingPool | null = null;
  const keys: FoldKey[] = [];
  for (const seed of seeds) {
    for (const f of patientWiseFolds(all, k, seed)) {
      const foldSeed = mixSeed(seed, 1000 + f.fold);
      const init = await buildModelAsync(spec, foldSeed);
      const initial = getWeights(init);
      init.dispose();
      keys.push({
        seed,
        fold: f.fold,
        foldSeed,
        test: new Set(f.test.map((i) => i.path)),
        initial,
        tag: seeds.length > 1 ? `seed ${seed} fold ${f.fold + 1}/${k}` : `fold ${f.fold + 1}/${k}`,
      });
    }
  }

  const run = async (key: FoldKey, fold: FoldData, config: MethodConfig, name: string): Promise<FedResult> => {
    const t = Date.now();
    const r = await federate({ recipe, initial: key.initial, evalModel, seed: key.foldSeed, log, tag: `${key.tag} ${name}` }, fold, config);
    log(
      `    ${key.tag} ${name}: balanced ${r.central.balancedAccuracy.toFixed(3)}, AUC ${r.central.auc?.toFixed(3) ?? '-'}, ` +
        `per site ${r.perSite.map((p) => p?.balancedAccuracy.toFixed(2) ?? '-').join('/')}, validation loss ${r.validationLoss.toFixed(3)}, balanced ${r.validationBalancedAccuracy.toFixed(3)} ` +
        `(round ${r.keptRound} of ${r.roundsRun}; ${((Date.now() - t) / 1000).toFixed(0)} s)`,
    );
    return r;
  };

  // The ceiling: FedAvg on IID hospitals without any shift.
  log(`\n== iid (the ceiling) ==`);
  const iid = dealHospitals(all, 'iid', hospitalOptions);
  iid.describe.forEach((d) => log(`  ${d}`));
  const iidPlain = await plainFeatures(iid, env);
  const iidRecords: FoldRecord[] = [];
  const iidModels = new Map<FoldKey, NamedTensor[]>();
  for (const key of keys) {
    const r = await run(key, foldData(iidPlain, splitSites(iid, key, valFraction)), singleMethodConfig('fedavg', params), 'fedavg (iid)');
    iidRecords.push(recordOf(key, r));
    iidModels.set(key, r.global);
  }
  const iidSummary = summarize(iidRecords, nSites);

  const out: Record<string, unknown> = {};
  const tables: string[] = [];
  try {
    for (const shift of shifts) {
      const shiftStarted = Date.now();
      log(`\n== ${shift} ==`);
      const hospitals = dealHospitals(all, shift as HospitalKind, hospitalOptions);
      log(`  hospitals (partition seed ${hospitals.seed}):`);
      hospitals.describe.forEach((d) => log(`    ${d}`));
      const plain = await plainFeatures(hospitals, env);
      const splits = new Map(keys.map((key) => [key, splitSites(hospitals, key, valFraction)]));
      // The federated stain target and stain augmentation features, made when a method first needs them.
      let target: { target: MacenkoTarget; set: DecodedSet; perFold: { degrees: number; maxConcentration: number } } | null = null;
      let aug: DecodedSet | null = null;
      const setFor = async (stain: StainMethod): Promise<DecodedSet> => {
        if (stain === 'none') return plain;
        if (stain === 'aug') {
          aug ??= await augmentedFeatures(hospitals, env, plain, hedSigma);
          return aug;
        }
        if (!target) {
          const t0 = Date.now();
          const fits = await macenkoFits(hospitals, env.imageCache);
          // Each hospital fits its whole archive once, before any fold (see README: a fold-independent target).
          const archive = federatedTarget(hospitals.sites, fits);
          let degrees = 0;
          let maxConcentration = 0;
          for (const key of keys) {
            const d = targetDistance(federatedTarget((splits.get(key) as SiteSplit[]).map((s) => s.train), fits), archive);
            degrees = Math.max(degrees, d.degrees);
            maxConcentration = Math.max(maxConcentration, d.maxConcentration);
          }
          log(
            `  federated stain target (Macenko, ${[...fits.values()].filter((f) => f !== null).length}/${fits.size} images fitted, ${((Date.now() - t0) / 1000).toFixed(1)} s): ` +
              `H ${archive.stainMatrix[0].map((x) => x.toFixed(3)).join(',')} E ${archive.stainMatrix[1].map((x) => x.toFixed(3)).join(',')} ` +
              `max ${archive.maxConcentrations.map((x) => x.toFixed(3)).join(',')}; per-fold targets (training patients only) differ by <= ${degrees.toFixed(2)} deg, ` +
              `<= ${(100 * maxConcentration).toFixed(1)} % in max concentration`,
          );
          target = { target: archive, set: await targetFeatures(hospitals, env, archive), perFold: { degrees, maxConcentration } };
        }
        return target.set;
      };
      const dataCache = new Map<string, FoldData>();
      const dataFor = async (key: FoldKey, stain: StainMethod): Promise<FoldData> => {
        const id = `${keys.indexOf(key)}:${stain}`;
        let d = dataCache.get(id);
        if (!d) {
          d = foldData(await setFor(stain), splits.get(key) as SiteSplit[]);
          dataCache.set(id, d);
        }
        return d;
      };

      const records = new Map<Method, FoldRecord[]>();
      const fedbnModels = new Map<FoldKey, (NamedTensor[] | null)[]>();
      const iidOnShift: (number | null)[] = [];
      for (const key of keys) {
        const fold = await dataFor(key, 'none');
        const sizes = (splits.get(key) as SiteSplit[]).map((s) => `${s.train.length}+${s.validation.length}+${s.test.length}`).join(', ');
        log(`  ${key.tag}: sites' train+validation+test images ${sizes}`);
        // The IID model on this shift's test images (each patient as its hospital shows it).
        iidOnShift.push(ensembleScores(evalModel, [iidModels.get(key) as NamedTensor[]], fold.test, layoutOf(spec)).balancedAccuracy);
        for (const m of SINGLE_METHODS) {
          if (!methods.includes(m)) continue;
          const config = singleMethodConfig(m, params);
          const r = await run(key, await dataFor(key, config.stain), config, m);
          (records.get(m) ?? records.set(m, []).get(m))?.push(recordOf(key, r));
          if (m === 'fedbn') fedbnModels.set(key, r.siteModels);
        }
      }
      const summaries = new Map<Method, MethodSummary>();
      for (const [m, rs] of records) summaries.set(m, summarize(rs, nSites));
      // Methods are compared by the stage-1 balanced accuracy of their central model on the pooled
      // validation patients: the loss favours FedBN's ensemble of members (averaged probabilities have
      // a lower cross-entropy without being more often right).
      const validationScore = (m: Method) => summaries.get(m)?.validationBalancedAccuracy.mean;

      // The combination, from validation results only.
      let combination: Combination | null = null;
      if (methods.includes(COMBINED)) {
        combination = chooseCombination(Object.fromEntries(SINGLE_METHODS.map((m) => [m, validationScore(m)]).filter(([, v]) => v !== undefined)), params);
        log(`  combination (${combination.rule}): ${combination.components.join(' + ') || 'none'} = ${describeConfig(combination.config)}`);
        if (combination.sameAs !== null) {
          log(`  the combination is ${combination.sameAs} itself: not trained again`);
          records.set(COMBINED, records.get(combination.sameAs) ?? []);
        } else {
          for (const key of keys) {
            const r = await run(key, await dataFor(key, combination.config.stain), combination.config, COMBINED);
            (records.get(COMBINED) ?? records.set(COMBINED, []).get(COMBINED))?.push(recordOf(key, r));
          }
        }
        summaries.set(COMBINED, summarize(records.get(COMBINED) ?? [], nSites));
      }

      // Label skew: personalization + FedBN against local-only training, per site.
      let personalization: Record<string, unknown> | null = null;
      const personalRows: string[] = [];
      if (shift === 'label-skew' && methods.includes('fedbn')) {
        pool ??= await createTrainingPool({ workers: 1, backend: parseBackendChoice(o.backend) });
        const own: { personalized: (number | null)[]; localOnly: (number | null)[]; personalizedCentral: (number | null)[]; localOnlyCentral: (number | null)[] }[] = Array.from(
          { length: nSites },
          () => ({ personalized: [], localOnly: [], personalizedCentral: [], localOnlyCentral: [] }),
        );
        for (const key of keys) {
          const t = Date.now();
          const fold = await dataFor(key, 'none');
          const ctx = { recipe, initial: key.initial, evalModel, seed: key.foldSeed, log, tag: `${key.tag} personalize` };
          const personal = await personalize(ctx, fold, fedbnModels.get(key) ?? [], personalizeEpochs, personalizeLr);
          // Local-only: each site alone (bench:accuracy's localOnly: early stopping on its own validation patients, refit).
          const split = splits.get(key) as SiteSplit[];
          const withValidation = split.map((s, i) => ({ s, i })).filter(({ s }) => s.train.length > 0 && s.validation.length > 0);
          const sites: SiteData[] = withValidation.map(({ s }) => ({
            train: slice(plain, s.train, true),
            validation: slice(plain, s.validation),
            validationTrain: slice(plain, s.validation, true),
          }));
          const local = await localOnly({
            fold: key.fold,
            seed: key.foldSeed,
            recipe: localRecipe,
            pool,
            initial: key.initial,
            evalModel,
            sites,
            pooled: { train: fold.sites[0].train, validation: fold.validation, validationTrain: fold.validation },
            test: fold.test,
            log: () => undefined,
          });
          const localWeights: (NamedTensor[] | null)[] = fold.sites.map(() => null);
          withValidation.forEach(({ i }, j) => (localWeights[i] = local.perSite[j].weights ?? null));
          const score = (w: NamedTensor[] | null, data: FoldData['test'] | null) => (w && data ? ensembleScores(evalModel, [w], data, layoutOf(spec)).balancedAccuracy : null);
          fold.sites.forEach((s, i) => {
            own[i].personalized.push(score(personal[i], s.test));
            own[i].localOnly.push(score(localWeights[i], s.test));
            own[i].personalizedCentral.push(score(personal[i], fold.test));
            own[i].localOnlyCentral.push(score(localWeights[i], fold.test));
          });
          log(
            `    ${key.tag} personalization + FedBN vs local-only, own test patients: ` +
              fold.sites.map((_, i) => `site ${i + 1} ${own[i].personalized.at(-1)?.toFixed(2) ?? '-'} vs ${own[i].localOnly.at(-1)?.toFixed(2) ?? '-'}`).join(', ') +
              ` (${((Date.now() - t) / 1000).toFixed(0)} s)`,
          );
        }
        const perSite = own.map((x, i) => ({
          site: i + 1,
          personalizedFedbn: meanStd(x.personalized),
          localOnly: meanStd(x.localOnly),
          personalizedFedbnOnCentral: meanStd(x.personalizedCentral),
          localOnlyOnCentral: meanStd(x.localOnlyCentral),
        }));
        const check = checkPersonalization(
          perSite.map((p) => ({
            site: p.site,
            personalized: p.personalizedFedbn.n > 0 ? p.personalizedFedbn.mean : null,
            localOnly: p.localOnly.n > 0 ? p.localOnly.mean : null,
          })),
        );
        personalization = {
          method: `the kept FedBN model with the site's own local tensors, ${personalizeEpochs} more local epochs at learning rate ${personalizeLr}`,
          localOnly: `bench:accuracy localOnly: up to ${localMaxEpochs} epochs, early stopping on the site's validation patients, refit on training + validation`,
          perSite: perSite.map((p) => ({
            site: p.site,
            personalizedFedbn: r4(p.personalizedFedbn.mean),
            personalizedFedbnSd: r4(p.personalizedFedbn.std),
            localOnly: r4(p.localOnly.mean),
            localOnlySd: r4(p.localOnly.std),
            personalizedFedbnOnCentral: r4(p.personalizedFedbnOnCentral.mean),
            localOnlyOnCentral: r4(p.localOnlyOnCentral.mean),
            folds: Math.min(p.personalizedFedbn.n, p.localOnly.n),
          })),
          met: check.met,
          sitesBeaten: check.beaten,
          sitesTied: check.tied,
          sitesCompared: check.compared,
        };
        personalRows.push(`Personalization + FedBN vs local-only, balanced accuracy per site (%), own test patients | the site's model on the central test set:`);
        for (const p of perSite) {
          personalRows.push(
            `  site ${p.site}: ${pctOf(p.personalizedFedbn).padStart(12)} vs ${pctOf(p.localOnly).padStart(12)}   |   ${pctOf(p.personalizedFedbnOnCentral).padStart(12)} vs ${pctOf(p.localOnlyOnCentral).padStart(12)}`,
          );
        }
        personalRows.push(
          `Target (label skew): personalization + FedBN beats local-only on every site: ${check.met === null ? 'undefined' : check.met ? 'MET' : 'NOT MET'} ` +
            `(${check.beaten} of ${check.compared} sites beaten, ${check.tied} tied)`,
        );
      }

      // Figures.
      const fedavg = summaries.get('fedavg') as MethodSummary;
      const best = bestByValidation(Object.fromEntries([...summaries].map(([m, s]) => [m, s.validationBalancedAccuracy.mean])));
      const bestSummary = summaries.get(best) as MethodSummary;
      const bestOnTest = [...summaries].reduce((a, b) => (b[1].balancedAccuracy.mean > a[1].balancedAccuracy.mean ? b : a));
      const recovered = recoveredGapFraction(bestSummary.balancedAccuracy.mean, fedavg.balancedAccuracy.mean, iidSummary.balancedAccuracy.mean);
      const worst = worstSiteGap(
        bestSummary.balancedAccuracy.mean,
        bestSummary.perSite.map((p) => (p.balancedAccuracy.n > 0 ? p.balancedAccuracy.mean : null)),
      );
      const stainCheck = shift === 'stain' ? checkStainTarget(recovered, worst?.gap ?? null) : null;

      const lines: string[] = [];
      lines.push(`\n== ${shift}: ${nSites} hospitals (partition seed ${hospitals.seed}${shift === 'stain' ? `, stain strength ${hospitalOptions.stainStrength}` : ''}${shift === 'label-skew' ? `, alpha ${hospitalOptions.alpha}` : ''}) ==`);
      hospitals.describe.forEach((d) => lines.push(`  ${d}`));
      lines.push(`Stage-1 balanced accuracy and AUC (%), mean ± sd over ${keys.length} folds (${k} folds x seeds ${seeds.join(',')}); per site: the site's model on its own test patients`);
      lines.push(
        `${'method'.padEnd(12)} ${'balanced'.padStart(12)} ${'AUC'.padStart(12)} ${'val loss'.padStart(9)} ${'val bal'.padStart(8)} ${'round'.padStart(6)} ` +
          Array.from({ length: nSites }, (_, s) => `site ${s + 1}`.padStart(12)).join(' '),
      );
      const row = (name: string, m: MethodSummary, sites = true) =>
        `${name.padEnd(12)} ${pctOf(m.balancedAccuracy).padStart(12)} ${pctOf(m.auc).padStart(12)} ${m.validationLoss.mean.toFixed(3).padStart(9)} ${(100 * m.validationBalancedAccuracy.mean).toFixed(1).padStart(8)} ${m.keptRound.mean.toFixed(1).padStart(6)} ` +
        (sites ? m.perSite.map((p) => pctOf(p.balancedAccuracy).padStart(12)).join(' ') : '(other hospitals: the IID ones)');
      lines.push(row('fedavg IID', iidSummary, false));
      for (const m of METHODS) {
        const s = summaries.get(m);
        if (s) lines.push(row(m, s) + (m === best ? '  <- best (validation)' : ''));
      }
      if (combination) lines.push(`combined = ${describeConfig(combination.config)}${combination.sameAs ? ` (= ${combination.sameAs}, not trained again)` : ''}`);
      const iidOnShiftMean = meanStd(iidOnShift);
      lines.push(`FedAvg IID (ceiling, unshifted IID hospitals, same test patients): ${pctOf(iidSummary.balancedAccuracy)}; the IID model on this shift's test images: ${pctOf(iidOnShiftMean)}`);
      lines.push(
        `best by validation balanced accuracy: ${best} ${pctOf(bestSummary.balancedAccuracy)} (best on test, optimistic: ${bestOnTest[0]} ${pctOf(bestOnTest[1].balancedAccuracy)}); ` +
          `gap FedAvg IID - FedAvg ${shift}: ${(100 * (iidSummary.balancedAccuracy.mean - fedavg.balancedAccuracy.mean)).toFixed(1)} points; ` +
          `recovered ${recovered === null ? 'undefined (gap <= 1 point)' : `${(100 * recovered).toFixed(0)} %`}; ` +
          `worst site ${worst ? `site ${worst.site + 1}, ${(100 * worst.gap).toFixed(1)} points below central` : '-'}`,
      );
      if (stainCheck) lines.push(`Target (stain shift): ${stainCheck.met === null ? 'UNDEFINED' : stainCheck.met ? 'MET' : 'NOT MET'}: ${stainCheck.text}`);
      lines.push(...personalRows);
      lines.push(`(${shift}: ${((Date.now() - shiftStarted) / 1000).toFixed(0)} s)`);
      tables.push(...lines);
      // With --json the tables go to stderr once, at the end.
      if (!o.json) lines.forEach((l) => log(l));

      const tgt = target as { target: MacenkoTarget; perFold: { degrees: number; maxConcentration: number } } | null;
      out[shift] = {
        fedavgIid: r4(iidSummary.balancedAccuracy.mean),
        fedavgIidSd: r4(iidSummary.balancedAccuracy.std),
        fedavgIidAuc: r4(iidSummary.auc.mean),
        fedavgIidOnShiftTest: r4(iidOnShiftMean.mean),
        fedavgShift: r4(fedavg.balancedAccuracy.mean),
        fedavgShiftSd: r4(fedavg.balancedAccuracy.std),
        methods: Object.fromEntries([...METHODS].filter((m) => summaries.has(m)).map((m) => [m, jsonOf(summaries.get(m) as MethodSummary)])),
        best: { method: best, balancedAccuracy: r4(bestSummary.balancedAccuracy.mean), balancedAccuracySd: r4(bestSummary.balancedAccuracy.std), selectedBy: 'highest mean stage-1 balanced accuracy on the pooled validation patients' },
        bestOnTest: { method: bestOnTest[0], balancedAccuracy: r4(bestOnTest[1].balancedAccuracy.mean), note: 'chosen on test results: optimistic, for reference only' },
        ...(combination ? { combination: { components: combination.components, config: describeConfig(combination.config), trained: combination.sameAs === null } } : {}),
        recoveredGapFraction: r4(recovered),
        recoveredGapNote: recovered === null ? 'null: FedAvg IID is not more than 1 point above FedAvg under the shift' : undefined,
        worstSiteGap: worst ? r4(worst.gap) : null,
        worstSite: worst ? worst.site + 1 : null,
        ...(stainCheck ? { target: { met: stainCheck.met, recovered80: stainCheck.recovered, sitesWithin5Points: stainCheck.sites } } : {}),
        ...(personalization ? { personalization } : {}),
        hospitals: { partitionSeed: hospitals.seed, sites: hospitals.describe, ...(shift === 'stain' ? { stainStrength: hospitalOptions.stainStrength } : {}) },
        ...(tgt ? { stainTarget: { target: tgt.target, perFoldMaxDegrees: r4(tgt.perFold.degrees), perFoldMaxConcentrationChange: r4(tgt.perFold.maxConcentration) } } : {}),
        seconds: Math.round((Date.now() - shiftStarted) / 1000),
      };
    }
  } finally {
    evalModel.dispose();
    await pool?.close();
  }

  const wall = (Date.now() - started) / 1000;
  const runInfo = {
    folds: k,
    seeds,
    sites: nSites,
    rounds: recipe.rounds,
    minRounds: recipe.minRounds,
    roundPatience: recipe.roundPatience,
    localEpochs: recipe.localEpochs,
    mu: params.mu,
    lambda: params.lambda,
    hedSigma,
    model: spec.options,
    backend: backend.name,
    wallSeconds: Math.round(wall),
  };
  for (const v of Object.values(out)) (v as Record<string, unknown>)['run'] = runInfo;
  say(`\nbench:domain on ${path.relative(ROOT, path.resolve(o.data)) || '.'}: ${all.length} images; default model family with a batch-normalized hidden layer (${JSON.stringify(spec.options)})`);
  say(
    `In-process federation, ${nSites} hospitals, ${k}-fold patient-wise CV x seeds ${seeds.join(',')} (same folds for every shift and method); rounds <= ${recipe.rounds} x ${recipe.localEpochs} local epochs, ` +
      `round kept by pooled validation loss from round ${recipe.minRounds}; FedProx mu ${params.mu}; CORAL/MMD lambda ${params.lambda}; stain augmentation HED sigma ${hedSigma}.`,
  );
  tables.forEach((l) => say(l));
  say(`\nwall time ${wall.toFixed(0)} s (${(wall / 60).toFixed(1)} min, ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(1)})`);
  result(out);
}

runBench<Options>(
  new Command('npm run bench:domain --')
    .description('Domain adaptation under simulated hospital shifts (stain, label skew, magnification) on real BreakHis images')
    .option('--data <dir>', 'BreakHis tree', DEFAULT_SAMPLE)
    .option('--folds <k>', 'patient-wise folds (default 3)')
    .option('--seeds <list>', 'fold seeds (default 1,2,3,4,5; --quick 1)')
    .option('--rounds <n>', 'federated rounds at most (default 15; --quick 2)')
    .option('--min-rounds <n>', 'rounds before a round may be kept or training stop (default 5)')
    .option('--round-patience <n>', 'rounds without a better validation loss before stopping (default 4)')
    .option('--local-epochs <n>', 'local epochs per round (default 2)')
    .option('--shifts <list>', `shifts, of ${SHIFTS.join(', ')}`, SHIFTS.join(','))
    .option('--methods <list>', `methods, of ${METHODS.join(', ')} (fedavg always runs)`, METHODS.join(','))
    .option('--sites <n>', 'simulated hospitals', '3')
    .option('--alpha <a>', 'label-skew Dirichlet alpha', '0.3')
    .option('--stain-strength <x>', "factor on the partitioner's stain-shift ranges (1 = partitionSites' shifts; 2 = H/E turned 4-16 degrees, concentrations x(1 +/- 0.2-0.4))", '2')
    .option('--partition-seed <n>', 'first partition seed tried (the first whose hospitals all hold --min-patients patients is used)', '1')
    .option('--min-patients <n>', 'patients every hospital must hold', '5')
    .option('--mu <x>', 'FedProx coefficient of the fedprox method', '0.01')
    .option('--lambda <x>', 'CORAL / MMD weight', '1')
    .option('--hed <sigma>', 'HED jitter sigma of stain augmentation (training views)', '0.1')
    .option('--personalize-epochs <n>', 'label skew: local epochs of personalization (default 5)')
    .option('--personalize-lr <x>', "label skew: personalization learning rate (the coordinator's default: lr / 10)", '0.0001')
    .option('--local-max-epochs <n>', 'label skew: local-only training epochs at most (default 30)')
    .option('--val-fraction <x>', "share of each hospital's training patients held out for validation", '0.2')
    .option('--batch <n>', 'batch size', '32')
    .option('--lr <x>', 'Adam learning rate', '0.001')
    .option('--backend <name>', 'auto, wasm, cpu, tensorflow', 'auto')
    .option('--cache-dir <dir>', 'cache directory (tile features in DIR/features; default ~/.cache/histofed)')
    .option('--no-cache', 'compute tile features without the on-disk cache')
    .option('--quick', 'smoke setting: 1 seed, 2 rounds of 1 local epoch, 1 personalization epoch, 2 local-only epochs')
    .option('--json', 'print one JSON line on stdout (tables go to stderr)'),
  main,
);
