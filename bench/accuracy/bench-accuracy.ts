/**
 * npm run bench:accuracy [-- --json]: patient-wise cross-validation of the default two-stage model
 * on a real BreakHis tree (default: the 213-image sample ../shared/data/breakhis-sample), in three
 * regimes trained and evaluated on the same folds with the same recipe:
 *
 * - centralized: all training patients of the fold pooled (early stopping on held-out patients);
 * - federated: the training patients dealt to 3 simulated sites (patient-wise, IID); R rounds of
 *   FedProx local training + FedAvg weighted by sample counts. This is an in-process simulation of
 *   the federation's math (the same training and aggregation functions); the real socket.io
 *   federation is tested elsewhere (npm run demo, tests/);
 * - local-only: each site alone, the mean over the sites.
 *
 * Folds: patientWiseFolds (libs/data): 5 folds by case number, stratified by label and subtype.
 * Within a fold, each site holds out ~20 % of its patients (patient-wise) for validation; the
 * centralized regime validates on the union of those patients, the federated one selects the round
 * on it, each local site on its own. Test patients are never used for model selection.
 *
 * Reported per regime: mean and sample standard deviation over folds of the test fold's stage-1
 * patient-level recognition rate (patientAccuracy), patient diagnosis accuracy, balanced accuracy,
 * ROC AUC and stage-2 (cascade) macro-F1, and the regime's wall time. Progress goes to stderr; the
 * summary to stdout, or one JSON line on stdout with --json.
 *
 * With the federated regime (unless --no-ensemble), each fold also builds the ensemble members a run
 * can end with (snapshots, personalized sites, federated boosting) and scores every member and
 * combiner on the same test fold (ensemble.ts; `ensemble` in the JSON).
 */
import { Command } from 'commander';
import * as os from 'node:os';
import * as path from 'node:path';
import { BAG_MODEL_KINDS, BREAKHIS_SUBTYPE_PARENTS, bagTilesOf, isBagModel, type ModelSpec } from '@histofed/fl-core';
import {
  DEFAULT_AUGMENTATION,
  DEFAULT_MACENKO_TARGET,
  FeatureCache,
  ImageCache,
  assertHasImages,
  createStainNormalizer,
  defaultImageCacheDir,
  loadLabeledImages,
  loadTileSet,
  patientWiseFolds,
  readBreakHisTree,
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
  type FitMonitor,
} from '@histofed/ml';
import { mkdtempSync, rmSync } from 'node:fs';
import { reporter, runBench, wallTimeLine } from '../lib/bench-output';
import { federatedOverSockets } from './socket-federation';
import { rowsByImage, type DecodedSet } from './data-slices';
import { centralized, federated, localOnly, type FoldContext, type Recipe, type RegimeResult } from './regimes';
import { meanStd, pct, type MeanStd } from './stats';
import { COMBINERS, DEFAULT_COMBINER, foldEnsemble, type FoldEnsemble } from './ensemble';
import { ensembleTable, summarizeEnsemble } from './ensemble-summary';
import { int, ints, num } from '../lib/cli-options';
import { foldData, foldSites } from '../lib/fold-sites';

const ROOT = path.resolve(__dirname, '../..');
const DEFAULT_SAMPLE = path.resolve(ROOT, '../shared/data/breakhis-sample');
const REGIMES = ['centralized', 'federated', 'federatedSockets', 'localOnly'] as const;
type Regime = (typeof REGIMES)[number];

interface Options {
  data: string;
  folds: string;
  onlyFolds?: string;
  seed: string;
  seeds?: string;
  model: string;
  head: string;
  bagTiles: string;
  cut: string;
  trainFrom?: string;
  input: string;
  scale: string;
  views: string;
  augmentViews: boolean;
  hed: string;
  stain: string;
  imageSize?: string;
  width: string;
  blocks: string;
  denseUnits: string;
  dropout: string;
  batchNorm: string;
  batch?: string;
  lr: string;
  epochs?: string;
  patience?: string;
  minEpochs?: string;
  monitor: string;
  rounds?: string;
  localEpochs?: string;
  roundPatience: string;
  minRounds?: string;
  refit: boolean;
  mu: string;
  augmentCopies: string;
  sites: string;
  valFraction: string;
  workers: string;
  backend: string;
  regimes: string;
  ensemble: boolean;
  snapshots: string;
  personalizeEpochs: string;
  boostMembers: string;
  boostRounds: string;
  boostStrength: string;
  cacheDir?: string;
  cache: boolean;
  json?: boolean;
}

const METRICS = ['balancedAccuracy', 'auc', 'patientAccuracy', 'patientDiagnosisAccuracy', 'stage2MacroF1'] as const;

function recipeOf(o: Options): Recipe {
  const monitor = o.monitor as FitMonitor;
  if (!['loss', 'balancedAccuracy', 'patientAccuracy'].includes(monitor)) throw new Error(`--monitor: loss, balancedAccuracy or patientAccuracy, got ${o.monitor}`);
  if (o.model !== 'se-cnn' && o.model !== 'backbone') throw new Error(`--model: se-cnn or backbone, got ${o.model}`);
  if (o.input !== 'signed' && o.input !== 'unit') throw new Error(`--input: signed or unit, got ${o.input}`);
  const heads = ['mean', ...BAG_MODEL_KINDS];
  if (!heads.includes(o.head)) throw new Error(`--head: ${heads.join(', ')}, got ${o.head}`);
  const bag = o.model === 'backbone' && o.head !== 'mean';
  if (bag && o.trainFrom) throw new Error('--head: the bag heads read frozen tile features (no --train-from)');
  const spec: ModelSpec =
    o.model === 'backbone'
      ? {
          kind: bag ? o.head : 'backbone-head',
          imageSize: int('image-size', o.imageSize ?? '224', 16),
          numClasses: 2,
          subtypeParents: BREAKHIS_SUBTYPE_PARENTS,
          backbone: { name: MOBILENET_V2_IMAGENET, cut: o.cut, input: o.input, ...(o.trainFrom ? { trainFrom: o.trainFrom } : {}) },
          tiles: { scale: num('scale', o.scale, 0.05, 4), views: int('views', o.views, 0) },
          // The bag heads take their own width defaults (attention-mil: none, transformer-mil: 64 tokens).
          options: bag
            ? { dropout: num('dropout', o.dropout, 0, 0.95), bagTiles: int('bag-tiles', o.bagTiles, 1) }
            : { denseUnits: int('dense-units', o.denseUnits, 0), dropout: num('dropout', o.dropout, 0, 0.95) },
        }
      : {
          kind: 'se-cnn',
          imageSize: int('image-size', o.imageSize ?? '64', 16),
          numClasses: 2,
          subtypeParents: BREAKHIS_SUBTYPE_PARENTS,
          options: {
            width: num('width', o.width, 0.1, 16),
            blocks: int('blocks', o.blocks, 3),
            denseUnits: int('dense-units', o.denseUnits, 1),
            dropout: num('dropout', o.dropout, 0, 0.95),
            batchNorm: int('batch-norm', o.batchNorm, 0),
          },
        };
  return {
    spec,
    // Heads on tile features (~20 rows per image) take larger batches and more epochs than the CNNs;
    // a bag head reads one row per image.
    batchSize: int('batch', o.batch ?? (bag ? '8' : o.model === 'backbone' ? '32' : '16'), 1),
    learningRate: num('lr', o.lr, 1e-6, 1),
    maxEpochs: int('epochs', o.epochs ?? (o.model === 'backbone' ? '30' : '12'), 1),
    patience: int('patience', o.patience ?? (o.model === 'backbone' ? '8' : '4'), 1),
    minEpochs: int('min-epochs', o.minEpochs ?? (o.model === 'backbone' ? '10' : '1'), 1),
    monitor,
    rounds: int('rounds', o.rounds ?? (o.model === 'backbone' ? '30' : '20'), 1),
    localEpochs: int('local-epochs', o.localEpochs ?? (o.model === 'backbone' ? '2' : '1'), 1),
    minRounds: int('min-rounds', o.minRounds ?? (o.model === 'backbone' ? '10' : '1'), 1),
    refit: o.refit,
    roundPatience: int('round-patience', o.roundPatience, 1),
    proximalMu: num('mu', o.mu, 0),
    // Tiles bring their own training views (augmented crops); copies are for whole images.
    augmentCopies: o.model === 'backbone' ? 1 : int('augment-copies', o.augmentCopies, 1),
    augment: DEFAULT_AUGMENTATION,
  };
}

interface FoldOutcome {
  fold: number;
  /** The seed of the fold split this fold belongs to. */
  seed: number;
  testPatients: number;
  testImages: number;
  results: Partial<Record<Regime, RegimeResult>>;
  seconds: Partial<Record<Regime, number>>;
  /** Members and combiners built after the federated regime (--ensemble), and their wall time. */
  ensemble?: FoldEnsemble;
  ensembleSeconds?: number;
}

async function main(o: Options): Promise<void> {
  const started = Date.now();
  const { say, result } = reporter(Boolean(o.json));
  const log = (line: string) => process.stderr.write(line + '\n');
  let recipe = recipeOf(o);
  const k = int('folds', o.folds, 2);
  const seeds = ints('seeds', o.seeds ?? o.seed, 0);
  const nSites = int('sites', o.sites, 1);
  const valFraction = num('val-fraction', o.valFraction, 0.05, 0.5);
  const workers = int('workers', o.workers, 1);
  const regimes = o.regimes.split(',').map((r) => r.trim()) as Regime[];
  for (const r of regimes) if (!REGIMES.includes(r)) throw new Error(`--regimes: ${r} is not one of ${REGIMES.join(', ')}`);
  const size = recipe.spec.imageSize;
  const ensembleOptions = {
    snapshots: int('snapshots', o.snapshots, 0),
    personalizeEpochs: int('personalize-epochs', o.personalizeEpochs, 0),
    boostMembers: int('boost-members', o.boostMembers, 0),
    boostRounds: int('boost-rounds', o.boostRounds, 1),
    boostStrength: num('boost-strength', o.boostStrength, 0, 20),
  };
  const withEnsemble = o.ensemble && regimes.includes('federated');

  const dataset = assertHasImages(await readBreakHisTree(path.resolve(o.data)));
  const only = o.onlyFolds === undefined ? null : new Set(ints('only-folds', o.onlyFolds, 1).map((f) => f - 1));
  const patients = new Set(dataset.images.map((i) => i.patientId)).size;
  log(`data: ${dataset.images.length} images, ${patients} patients, ${new Set(dataset.images.map((i) => i.caseId)).size} cases (${o.data})`);

  const backend = await selectBackend(parseBackendChoice(o.backend));
  const t0 = Date.now();
  let decoded: DecodedSet;
  const tiles = recipe.spec.tiles;
  if (recipe.spec.backbone && tiles) {
    const resolved = await resolveBackbone(recipe.spec.backbone, {}, size);
    recipe = { ...recipe, spec: { ...recipe.spec, backbone: resolved.spec } };
    const extractor = await tileFeatureExtractor(resolved.spec, size);
    const cache = o.cache ? new FeatureCache(o.cacheDir ? { dir: path.join(o.cacheDir, 'features') } : {}) : undefined;
    if (o.stain !== 'none' && o.stain !== 'macenko') throw new Error(`--stain: none or macenko, got ${o.stain}`);
    const normalize = o.stain === 'macenko' ? createStainNormalizer(DEFAULT_MACENKO_TARGET) : undefined;
    const transform = normalize ? { key: JSON.stringify(DEFAULT_MACENKO_TARGET), apply: (rgb: Float32Array) => normalize(rgb) } : undefined;
    const geometry = { size, scale: tiles.scale };
    const progress = (what: string) => (p: { images: number; total: number; rows: number; cached: number }) => {
      if (p.images % 25 === 0 || p.images === p.total) log(`  ${what}: ${p.images}/${p.total} images, ${p.rows} tiles (${p.cached} images cached), ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    };
    const positions = isBagModel(recipe.spec);
    const grid = await loadTileSet(dataset.images, { geometry, extractor, cache, transform, positions, onProgress: progress('grid tiles') });
    const viewCount = tiles.views;
    const views =
      viewCount > 0
        ? await loadTileSet(dataset.images, {
            geometry,
            extractor,
            cache,
            transform,
            positions,
            grid: false,
            views: { views: viewCount, seed: 1, augment: o.augmentViews ? DEFAULT_AUGMENTATION : false, hedSigma: num('hed', o.hed, 0, 0.5) },
            onProgress: progress('training views'),
          })
        : undefined;
    decoded = {
      data: grid,
      rowsOf: rowsByImage(grid, dataset.images),
      ...(views ? { views: { data: views, rowsOf: rowsByImage(views, dataset.images) } } : {}),
      ...(positions ? { bagTiles: bagTilesOf(recipe.spec) } : {}),
    };
    log(
      `tile features (${resolved.spec.cut}, ${extractor.rowShape.join('x')} per tile${resolved.spec.trainFrom ? `, fine-tuning from ${resolved.spec.trainFrom}` : ''}, backbone ${resolved.spec.sha256.slice(0, 12)}): ${grid.count} grid + ${views?.count ?? 0} view tiles of ${size} px ` +
        `at scale ${geometry.scale}, stain ${o.stain}, in ${((Date.now() - t0) / 1000).toFixed(1)} s; cache ${JSON.stringify(cache?.stats() ?? null)}`,
    );
  } else {
    const cache = o.cache ? new ImageCache({ dir: o.cacheDir ?? defaultImageCacheDir() }) : undefined;
    const data = await loadLabeledImages(dataset.images, size, { cache });
    decoded = { data, rowsOf: rowsByImage(data, dataset.images) };
    log(`decoded ${data.count} images at ${size} px in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  log(`backend ${backend.name}, ${workers} training workers`);
  log(
    `recipe: ${recipe.spec.kind} ${size}px ${JSON.stringify({ ...recipe.spec.options, backbone: recipe.spec.backbone?.cut, tiles: recipe.spec.tiles })}, batch ${recipe.batchSize}, lr ${recipe.learningRate}, ` +
      `max ${recipe.maxEpochs} epochs (patience ${recipe.patience}, monitor ${recipe.monitor}), federated ${recipe.rounds} rounds x ${recipe.localEpochs} ` +
      `local epochs (patience ${recipe.roundPatience}, mu ${recipe.proximalMu}), augmentation copies ${recipe.augmentCopies}`,
  );

  const socketWork = mkdtempSync(path.join(os.tmpdir(), 'histofed-bench-sockets-'));
  const socketCache = o.cacheDir ?? defaultImageCacheDir();
  const pool = await createTrainingPool({ workers, backend: parseBackendChoice(o.backend) });
  const evalModel = await buildModelAsync(recipe.spec, 1);
  const outcomes: FoldOutcome[] = [];
  try {
    for (const foldSeedBase of seeds) {
      const folds = patientWiseFolds(dataset.images, k, foldSeedBase);
      for (const f of folds) {
        if (only !== null && !only.has(f.fold)) continue;
        const foldSeed = mixSeed(foldSeedBase, 1000 + f.fold);
        const siteImages = foldSites(f.train, nSites, valFraction, foldSeed);
        const { sites, pooled, test } = foldData(decoded, siteImages, f.test);
        const init = await buildModelAsync(recipe.spec, foldSeed);
        const initial = getWeights(init);
        init.dispose();
        const testPatients = new Set(f.test.map((i) => i.patientId)).size;
        const tag = seeds.length > 1 ? `seed ${foldSeedBase} fold ${f.fold + 1}` : `fold ${f.fold + 1}`;
        log(
          `${tag}/${k}: test ${testPatients} patients (${f.testCases.length} cases, ${f.test.length} images); ` +
            `train ${siteImages.reduce((n, x) => n + x.train.length, 0)} images (${pooled.train.count} rows), validation ${new Set(pooled.validation.groups).size} patients; ` +
            `sites ${siteImages.map((x) => `${x.train.length}+${x.validation.length}`).join(', ')} (train+validation images)`,
        );
        const ctx: FoldContext = { fold: f.fold, seed: foldSeed, recipe, pool, initial, evalModel, sites, pooled, test, log };
        const outcome: FoldOutcome = { fold: f.fold, seed: foldSeedBase, testPatients, testImages: f.test.length, results: {}, seconds: {} };
        for (const regime of regimes) {
          const t = Date.now();
          log(`  ${tag} ${regime}`);
          const r =
            regime === 'centralized'
              ? await centralized(ctx)
              : regime === 'federated'
                ? await federated(ctx)
                : regime === 'federatedSockets'
                  ? await federatedOverSockets({
                      fold: f.fold,
                      seed: foldSeedBase,
                      recipe,
                      siteImages: siteImages.map((x) => [...x.train, ...x.validation]),
                      test: f.test,
                      workDir: socketWork,
                      cacheDir: socketCache,
                      backend: backend.name,
                      log,
                    })
                  : (await localOnly(ctx)).mean;
          outcome.results[regime] = r;
          outcome.seconds[regime] = (Date.now() - t) / 1000;
          log(
            `  ${tag} ${regime}: test balanced ${r.test.balancedAccuracy.toFixed(3)}, AUC ${r.test.auc?.toFixed(3) ?? '-'}, patient acc ${r.test.patientAccuracy.toFixed(3)}, ` +
              `diagnosis ${r.test.patientDiagnosisAccuracy.toFixed(3)}, stage-2 macro-F1 ${r.test.stage2MacroF1.toFixed(3)} ` +
              `(validation ${recipe.monitor} ${r.validation.toFixed(3)}, kept ${r.kept.toFixed(1)} of ${r.trained.toFixed(1)}; ${outcome.seconds[regime]?.toFixed(0)} s)`,
          );
          if (regime === 'federated' && withEnsemble) {
            const te = Date.now();
            log(`  ${tag} ensemble (after the federated regime)`);
            const e = await foldEnsemble(ctx, r, ensembleOptions);
            outcome.ensemble = e;
            outcome.ensembleSeconds = (Date.now() - te) / 1000;
            const show = (x: Record<string, { balancedAccuracy: number; ece: number }>) =>
              Object.entries(x).map(([id, v]) => `${id} ${v.balancedAccuracy.toFixed(3)}/${v.ece.toFixed(3)}`).join(', ');
            for (const note of e.notes) log(`    ${note}`);
            log(`  ${tag} ensemble members (test balanced/ECE): ${show(e.members)}`);
            log(`  ${tag} ensemble combiners (test balanced/ECE): ${show(e.combiners)} (${outcome.ensembleSeconds.toFixed(0)} s)`);
          }
        }
        outcomes.push(outcome);
      }
    }
  } finally {
    evalModel.dispose();
    await pool.close();
    rmSync(socketWork, { recursive: true, force: true });
  }

  const summary: Record<string, Record<string, unknown>> = {};
  const means: Partial<Record<Regime, Record<string, MeanStd>>> = {};
  for (const regime of regimes) {
    const rs = outcomes.map((x) => x.results[regime] as RegimeResult);
    const m: Record<string, MeanStd> = {};
    for (const key of METRICS) m[key] = meanStd(rs.map((r) => r.test[key]));
    m['validation'] = meanStd(rs.map((r) => r.validation));
    means[regime] = m;
    const strip = ({ mean, std }: MeanStd) => ({ mean, std });
    summary[regime] = {
      ...Object.fromEntries(METRICS.map((key) => [key, strip(m[key])])),
      validation: { monitor: recipe.monitor, ...strip(m['validation']) },
      perFold: outcomes.map((x) => {
        const r = x.results[regime] as RegimeResult;
        const r4 = (v: number | null) => (v === null || Number.isNaN(v) ? null : Number(v.toFixed(4)));
        return { seed: x.seed, fold: x.fold + 1, balancedAccuracy: r4(r.test.balancedAccuracy), auc: r4(r.test.auc), patientAccuracy: r4(r.test.patientAccuracy) };
      }),
      wallSeconds: Number(outcomes.reduce((s, x) => s + (x.seconds[regime] ?? 0), 0).toFixed(1)),
    };
  }
  const diff = (a: Regime, b: Regime) => {
    if (!means[a] || !means[b]) return null;
    return Object.fromEntries(METRICS.map((key) => [key, Number(((means[a] as Record<string, MeanStd>)[key].mean - (means[b] as Record<string, MeanStd>)[key].mean).toFixed(4))]));
  };
  const ensembleFolds = outcomes.filter((x) => x.ensemble !== undefined);
  const ensembleSummary = ensembleFolds.length > 0 ? summarizeEnsemble(ensembleFolds.map((x) => x.ensemble as FoldEnsemble), DEFAULT_COMBINER) : null;
  const wallSeconds = (Date.now() - started) / 1000;
  const out = {
    dataset: path.relative(ROOT, path.resolve(o.data)) || '.',
    images: dataset.images.length,
    patients,
    folds: k,
    foldsRun: outcomes.length,
    seeds,
    imageSize: size,
    sites: nSites,
    recipe: {
      model: recipe.spec,
      batchSize: recipe.batchSize,
      learningRate: recipe.learningRate,
      maxEpochs: recipe.maxEpochs,
      patience: recipe.patience,
      monitor: recipe.monitor,
      rounds: recipe.rounds,
      localEpochs: recipe.localEpochs,
      roundPatience: recipe.roundPatience,
      minRounds: recipe.minRounds,
      minEpochs: recipe.minEpochs,
      proximalMu: recipe.proximalMu,
      augmentCopies: recipe.augmentCopies,
      refit: recipe.refit,
      classWeights: 'balanced (both heads)',
      valFraction,
    },
    federation: 'federated: in-process simulation of the federation math (FedProx local training + sample-weighted FedAvg); federatedSockets: a real coordinator and site processes per fold',
    backend: backend.name,
    workers,
    cpus: os.cpus().length,
    regimes: summary,
    federatedMinusCentralized: diff('federated', 'centralized'),
    federatedSocketsMinusCentralized: diff('federatedSockets', 'centralized'),
    federatedMinusLocalOnly: diff('federated', 'localOnly'),
    ensemble: ensembleSummary
      ? {
          ...ensembleSummary,
          combinerNames: COMBINERS,
          settings: ensembleOptions,
          note:
            'after the federated regime, same folds; stage-1 balanced accuracy and ECE on the test fold; bestMember is an oracle pick (highest mean test balanced accuracy), which makes the comparison conservative for the ensemble',
          wallSeconds: Number(ensembleFolds.reduce((t, x) => t + (x.ensembleSeconds ?? 0), 0).toFixed(1)),
        }
      : null,
    wallSeconds: Number(wallSeconds.toFixed(1)),
  };

  say(`\nBreakHis ${out.dataset}: ${out.images} images, ${patients} patients; ${outcomes.length} patient-wise folds (${k}-fold x seeds ${seeds.join(', ')}), ${recipe.spec.kind} ${size} px`);
  say(`Federated = in-process simulation of the federation math (${nSites} sites, FedProx + FedAvg); federatedSockets = a real coordinator and ${nSites} site processes per fold.`);
  say('Test metrics (stage 1 unless named), mean ± sample std over folds (%):');
  say(`${'regime'.padEnd(16)} ${'balanced'.padStart(13)} ${'AUC'.padStart(13)} ${'patient acc'.padStart(13)} ${'pat. diagn.'.padStart(13)} ${'st2 macroF1'.padStart(13)} ${'wall s'.padStart(7)}`);
  for (const regime of regimes) {
    const m = means[regime] as Record<string, MeanStd>;
    say(`${regime.padEnd(16)} ${METRICS.map((key) => pct(m[key]).padStart(13)).join(' ')} ${String(summary[regime].wallSeconds).padStart(7)}`);
  }
  if (out.federatedMinusCentralized) say(`federated - centralized balanced accuracy: ${(100 * out.federatedMinusCentralized.balancedAccuracy).toFixed(1)} points`);
  if (out.federatedSocketsMinusCentralized) say(`federated (sockets) - centralized balanced accuracy: ${(100 * out.federatedSocketsMinusCentralized.balancedAccuracy).toFixed(1)} points`);
  if (out.federatedMinusLocalOnly) say(`federated - local-only balanced accuracy: ${(100 * out.federatedMinusLocalOnly.balancedAccuracy).toFixed(1)} points`);
  if (ensembleSummary) {
    say(
      `\nEnsembles after the federated regime (same folds; stage-1 balanced accuracy and ECE on the test fold, mean ± sd %; ` +
        `${ensembleOptions.snapshots} snapshots, ${ensembleOptions.personalizeEpochs > 0 ? `${nSites} personalized sites` : 'no personalized sites'}, ` +
        `${ensembleOptions.boostMembers} boosted members x ${ensembleOptions.boostRounds} rounds). The best member is an oracle pick on the test folds:`,
    );
    for (const line of ensembleTable(ensembleSummary)) say(line);
  }
  say(wallTimeLine(wallSeconds));
  result(out);
}

runBench<Options>(
  new Command('npm run bench:accuracy --')
    .description('Patient-wise k-fold accuracy of centralized, federated (in-process simulation) and local-only training on real BreakHis images')
    .option('--data <dir>', 'BreakHis tree', DEFAULT_SAMPLE)
    .option('--folds <k>', 'patient-wise folds', '5')
    .option('--only-folds <list>', 'run only these 1-based folds, e.g. 1,2 (for quick experiments)')
    .option('--seed <n>', 'folds, sites, initial weights and shuffles (one split)', '1')
    .option('--seeds <list>', 'repeat the k folds with each of these seeds (e.g. 1,2,3); overrides --seed')
    .option('--model <m>', 'backbone (ImageNet MobileNetV2 tile features + heads) or se-cnn (the compact CNN on whole images)', 'backbone')
    .option('--head <h>', `backbone: how an image's tiles make its prediction: mean (of the tiles' outputs, the default model), attention-mil or transformer-mil (bag models, issue 18)`, 'mean')
    .option('--bag-tiles <n>', 'bag heads: slots per bag (grid tiles + training views)', '32')
    .option('--cut <layer>', 'backbone: feature layer', 'block_10_depthwise_relu')
    .option('--train-from <layer>', 'backbone: fine-tune from this layer (e.g. block_9_expand) on the cached feature maps; default frozen')
    .option('--input <s>', 'backbone: pixel scaling signed ([-1, 1]) or unit ([0, 1])', 'signed')
    .option('--scale <x>', 'backbone: image scale before tiling (1 = native)', '1')
    .option('--views <n>', 'backbone: random training crops per image', '8')
    .option('--no-augment-views', 'backbone: training crops without flips/rotations/colour jitter')
    .option('--hed <sigma>', 'backbone: HED jitter of the training crops', '0.05')
    .option('--stain <m>', 'stain normalization before tiling: none or macenko', 'none')
    .option('--image-size <px>', 'model input size (backbone: tile size; default 224, se-cnn 64)')
    .option('--width <x>', 'se-cnn filter multiplier', '1')
    .option('--blocks <n>', 'se-cnn conv blocks (3 or 4)', '3')
    .option('--dense-units <n>', 'hidden dense units', '64')
    .option('--dropout <p>', 'dropout before the heads', '0.25')
    .option('--batch-norm <0|1>', 'batch normalisation after each convolution', '0')
    .option('--batch <n>', 'batch size (backbone 32, bag heads 8 images, se-cnn 16)')
    .option('--lr <x>', 'Adam learning rate', '0.001')
    .option('--epochs <n>', 'centralized / local-only: maximum epochs (backbone 30, se-cnn 12)')
    .option('--patience <n>', 'centralized / local-only: epochs without improvement before stopping (backbone 8, se-cnn 4)')
    .option('--min-epochs <n>', 'centralized / local-only: epochs before stopping or keeping weights (backbone 10, se-cnn 1)')
    .option('--monitor <m>', 'model selection on the validation patients: loss, balancedAccuracy or patientAccuracy', 'loss')
    .option('--rounds <n>', 'federated: maximum rounds (backbone 30, se-cnn 20; the socket regime runs them all)')
    .option('--local-epochs <n>', 'federated: local epochs per round (backbone 2, se-cnn 1)')
    .option('--no-refit', 'centralized / local-only: test the best validation epoch\'s model instead of retraining that many epochs on training + validation patients (what histofed-site train saves)')
    .option('--min-rounds <n>', 'federated: rounds before stopping or keeping a round (backbone 10, se-cnn 1)')
    .option('--round-patience <n>', 'federated: rounds without improvement before stopping', '8')
    .option('--mu <x>', 'federated: FedProx proximal coefficient', '0.01')
    .option('--augment-copies <n>', 'versions of each training image (original + n-1 seeded augmentations); 1 = none', '3')
    .option('--sites <n>', 'simulated sites', '3')
    .option('--val-fraction <x>', "share of each site's patients held out for validation", '0.2')
    .option('--workers <n>', 'training worker threads', '2')
    .option('--backend <name>', 'auto, wasm, cpu, tensorflow', 'auto')
    .option('--regimes <list>', `regimes to run, of ${REGIMES.join(', ')} (federatedSockets: real coordinator and site processes per fold)`, 'centralized,federated,localOnly')
    .option('--no-ensemble', 'federated: skip the ensemble members and combiners built after the federated regime (see ensemble.ts)')
    .option('--snapshots <n>', 'ensemble: snapshot members (global models of the rounds before the kept one)', '2')
    .option('--personalize-epochs <n>', 'ensemble: epochs each site fine-tunes the kept global model at lr/10 (0: no site members)', '2')
    .option('--boost-members <n>', 'ensemble: federated boosting members (0: none)', '2')
    .option('--boost-rounds <n>', 'ensemble: federated rounds per boosting member', '3')
    .option('--boost-strength <x>', 'ensemble: boosting strength (image weight exp(strength x soft error))', '2')
    .option('--cache-dir <dir>', 'decoded-image cache (default ~/.cache/histofed/images)')
    .option('--no-cache', 'decode without the on-disk cache')
    .option('--json', 'print one JSON line on stdout'),
  main,
);
