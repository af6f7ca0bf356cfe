/**
 * npm run bench:prune [-- --json | --quick]: squeeze-excitation-guided structured channel pruning
 * of the compact SE-CNN (libs/fl-core COMPACT_RUN_MODEL: two-stage se-cnn, 64 px whole images) on a
 * real BreakHis tree (default: the 213-image sample ../shared/data/breakhis-sample), in the
 * federated setting of bench:accuracy (issue 18, "Compact models").
 *
 * Per patient-wise fold (k folds x seeds, sites = patient partitions of the training patients, as
 * bench:accuracy builds them): the unpruned model is trained by the federated regime of
 * bench:accuracy (an in-process simulation: FedProx local training + FedAvg, the round kept on the
 * pooled validation patients). Then, for each ranking, iterative pruning along one schedule —
 * half the multiply-adds (the largest uniform channel fraction within the budget, ~70 % of the
 * channels), 50 % and 25 % of the channels (counts multiples of 4):
 *
 *   rank -> prune (libs/ml pruning: pruneWeights, the spec records the pruned shapes) -> fine-tune
 *   `--fine-tune-rounds` federated rounds (the kept round: lowest validation loss, the pruned model
 *   before fine-tuning included) -> next level from there.
 *
 * Rankings: `seGate` — each site computes its mean SE gate per channel on its own training images
 * (seGateStatistics: numbers only), the coordinator averages them weighted by image counts
 * (aggregateGateStatistics), the lowest are removed; `weightNorm` — the baseline, L1 norms of the
 * conv filters from the global weights alone.
 *
 * Reported per level and ranking: filters, parameters, multiply-adds (describeModel), update bytes
 * per site and round (float32 weights), training and inference images/s (measured once, on the first
 * fold), stage-1 balanced accuracy and AUC on the test patients (mean ± sample sd over folds), the
 * paired change of balanced accuracy to the unpruned model, and the issue's target: at half the
 * multiply-adds, balanced accuracy within 1 point of the unpruned model.
 */
import { Command } from 'commander';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as tfl from '@tensorflow/tfjs-layers';
import { COMPACT_RUN_MODEL, type LabeledImages, type ModelSpec, type NamedTensor } from '@histofed/fl-core';
import { DEFAULT_AUGMENTATION, ImageCache, assertHasImages, defaultImageCacheDir, loadLabeledImages, patientWiseFolds, readBreakHisTree } from '@histofed/data';
import {
  aggregateGateStatistics,
  buildModel,
  countsForChannelFraction,
  countsForMultiplyAdds,
  createTrainingPool,
  dataRowShape,
  describeModel,
  evaluateModel,
  evaluateModelAsync,
  filterCounts,
  getWeights,
  keepTopChannels,
  mixSeed,
  parseBackendChoice,
  predictProbabilities,
  pruneWeights,
  seGateStatistics,
  selectBackend,
  setWeights,
  specWithFilters,
  weightNormScores,
  type TrainingPool,
} from '@histofed/ml';
import { reporter, runBench, round, wallTimeLine } from '../lib/bench-output';
import { int, ints, num } from '../lib/cli-options';
import { foldData, foldSites } from '../lib/fold-sites';
import { rowsByImage, takeRows, type DecodedSet } from '../accuracy/data-slices';
import { federated, federatedRound, federatedSites, trainingWeights, type FederatedSite, type FoldContext, type Recipe } from '../accuracy/regimes';
import {
  LEVEL_IDS,
  RANKINGS,
  levelTable,
  pruningSchedule,
  summarizePruning,
  targetLine,
  updateBytes,
  type FoldPruning,
  type Level,
  type LevelCost,
  type LevelId,
  type LevelScore,
  type Ranking,
} from './summary';

const ROOT = path.resolve(__dirname, '../..');
const DEFAULT_SAMPLE = path.resolve(ROOT, '../shared/data/breakhis-sample');

interface Options {
  data: string;
  folds: string;
  onlyFolds?: string;
  seeds?: string;
  rounds?: string;
  roundPatience?: string;
  minRounds: string;
  localEpochs: string;
  fineTuneRounds?: string;
  batch: string;
  lr: string;
  mu: string;
  augmentCopies: string;
  sites: string;
  valFraction: string;
  multiple: string;
  rankings: string;
  workers: string;
  backend: string;
  throughput: boolean;
  cacheDir?: string;
  cache: boolean;
  quick?: boolean;
  json?: boolean;
}

function testScore(model: tfl.LayersModel, weights: NamedTensor[], test: LabeledImages, spec: ModelSpec, rounds: number, keptRound: number): LevelScore {
  setWeights(model, weights);
  const s1 = evaluateModel(model, test, { subtypeParents: spec.subtypeParents }).report.stage1;
  return { balancedAccuracy: s1.balancedAccuracy, auc: s1.auc, rounds, keptRound };
}

async function validationLoss(model: tfl.LayersModel, weights: NamedTensor[], validation: LabeledImages, spec: ModelSpec): Promise<number> {
  setWeights(model, weights);
  return (await evaluateModelAsync(model, validation, { subtypeParents: spec.subtypeParents })).metrics['loss'];
}

/**
 * Fine-tunes a pruned model for `rounds` federated rounds (bench:accuracy's federatedRound on the
 * pruned spec); keeps the lowest validation loss, the pruned model itself (round 0) included.
 */
async function fineTune(
  ctx: FoldContext,
  model: tfl.LayersModel,
  spec: ModelSpec,
  start: NamedTensor[],
  sites: readonly FederatedSite[],
  rounds: number,
  seedBase: number,
  tag: string,
): Promise<{ weights: NamedTensor[]; round: number; trainSeconds: number; trainRows: number }> {
  const c: FoldContext = { ...ctx, recipe: { ...ctx.recipe, spec }, evalModel: model, initial: start };
  let best = { weights: start, round: 0, value: await validationLoss(model, start, ctx.pooled.validation, spec) };
  let global = start;
  let trainSeconds = 0;
  let trainRows = 0;
  const line = [`round 0 val loss ${best.value.toFixed(3)}`];
  for (let r = 1; r <= rounds; r++) {
    const t = Date.now();
    const res = await federatedRound(c, sites, global, (s) => mixSeed(mixSeed(ctx.seed, seedBase + s), r));
    trainSeconds += (Date.now() - t) / 1000;
    trainRows += sites.reduce((n, s) => n + s.train.count, 0) * ctx.recipe.localEpochs;
    global = res.global;
    const value = await validationLoss(model, global, ctx.pooled.validation, spec);
    const isBest = value < best.value - 1e-9;
    if (isBest) best = { weights: global, round: r, value };
    line.push(`${r}: ${value.toFixed(3)}${isBest ? '*' : ''}`);
  }
  ctx.log(`      ${tag} fine-tune: ${line.join(', ')}`);
  return { weights: best.weights, round: best.round, trainSeconds, trainRows };
}

/** Images/s of one epoch of data-parallel training on the pool (after a warm-up that builds the workers' model) and of inference. */
async function throughput(pool: TrainingPool, recipe: Recipe, spec: ModelSpec, weights: NamedTensor[], train: LabeledImages, test: LabeledImages, model: tfl.LayersModel) {
  const opts = { epochs: 1, batchSize: recipe.batchSize, learningRate: recipe.learningRate, proximalMu: 0, seed: 1, ...trainingWeights(train, spec) };
  await pool.train(spec, weights, takeRows(train, Array.from({ length: Math.min(train.count, 2 * recipe.batchSize) }, (_, i) => i)), opts);
  let t = Date.now();
  await pool.train(spec, weights, train, opts);
  const trainRate = train.count / ((Date.now() - t) / 1000);
  setWeights(model, weights);
  const shape = dataRowShape(test);
  predictProbabilities(model, test.images, test.count, shape, 32);
  let best = Infinity;
  for (let k = 0; k < 3; k++) {
    t = Date.now();
    predictProbabilities(model, test.images, test.count, shape, 32);
    best = Math.min(best, (Date.now() - t) / 1000);
  }
  return { train: round(trainRate, 1), infer: round(test.count / best, 1) };
}

async function main(o: Options): Promise<void> {
  const started = Date.now();
  const { say, result } = reporter(Boolean(o.json));
  const log = (line: string) => process.stderr.write(line + '\n');
  const quick = Boolean(o.quick);
  const spec: ModelSpec = { ...COMPACT_RUN_MODEL };
  const recipe: Recipe = {
    spec,
    batchSize: int('batch', o.batch, 1),
    learningRate: num('lr', o.lr, 1e-6, 1),
    // early-stopped regimes (unused here) keep bench:accuracy's se-cnn values
    maxEpochs: 12,
    patience: 4,
    minEpochs: 1,
    monitor: 'loss',
    rounds: int('rounds', o.rounds ?? (quick ? '4' : '20'), 1),
    localEpochs: int('local-epochs', o.localEpochs, 1),
    roundPatience: int('round-patience', o.roundPatience ?? (quick ? '2' : '8'), 1),
    minRounds: int('min-rounds', o.minRounds, 1),
    proximalMu: num('mu', o.mu, 0),
    refit: false,
    augmentCopies: int('augment-copies', o.augmentCopies, 1),
    augment: DEFAULT_AUGMENTATION,
  };
  const fineTuneRounds = int('fine-tune-rounds', o.fineTuneRounds ?? (quick ? '1' : '5'), 0);
  const k = int('folds', o.folds, 2);
  const seeds = ints('seeds', o.seeds ?? (quick ? '1' : '1,2,3'), 0);
  const onlyFolds = o.onlyFolds ?? (quick ? '1,2' : undefined);
  const only = onlyFolds === undefined ? null : new Set(ints('only-folds', onlyFolds, 1).map((f) => f - 1));
  const nSites = int('sites', o.sites, 1);
  const valFraction = num('val-fraction', o.valFraction, 0.05, 0.5);
  const multiple = int('multiple', o.multiple, 1);
  const workers = int('workers', o.workers, 1);
  const rankings = o.rankings.split(',').map((r) => r.trim()) as Ranking[];
  for (const r of rankings) if (!RANKINGS.includes(r)) throw new Error(`--rankings: ${r} is not one of ${RANKINGS.join(', ')}`);

  const dataset = assertHasImages(await readBreakHisTree(path.resolve(o.data)));
  const patients = new Set(dataset.images.map((i) => i.patientId)).size;
  log(`data: ${dataset.images.length} images, ${patients} patients (${o.data})`);
  const backend = await selectBackend(parseBackendChoice(o.backend));
  const t0 = Date.now();
  const cache = o.cache ? new ImageCache({ dir: o.cacheDir ?? defaultImageCacheDir() }) : undefined;
  const data = await loadLabeledImages(dataset.images, spec.imageSize, { cache });
  const decoded: DecodedSet = { data, rowsOf: rowsByImage(data, dataset.images) };
  log(`decoded ${data.count} images at ${spec.imageSize} px in ${((Date.now() - t0) / 1000).toFixed(1)} s; backend ${backend.name}, ${workers} training workers`);

  // The schedule: one set of shapes per level, the same for both rankings and every fold.
  const half = countsForMultiplyAdds(spec, 0.5, multiple);
  const schedule = pruningSchedule([
    { id: 'full', filters: filterCounts(spec) },
    { id: 'halfMultiplyAdds', filters: half.filters },
    { id: 'channels50', filters: countsForChannelFraction(spec, 0.5, multiple) },
    { id: 'channels25', filters: countsForChannelFraction(spec, 0.25, multiple) },
  ]);
  const levelSpec = (l: Level): ModelSpec => (l.id === 'full' ? spec : specWithFilters(spec, l.filters));
  const models = new Map<LevelId, tfl.LayersModel>();
  const costs: Partial<Record<LevelId, LevelCost>> = {};
  for (const l of schedule) {
    const m = buildModel(levelSpec(l), 1);
    models.set(l.id, m);
    const d = describeModel(m);
    costs[l.id] = { filters: l.filters, parameters: d.parameters, multiplyAdds: d.multiplyAdds, updateBytes: updateBytes(getWeights(m)), trainImagesPerSecond: null, inferImagesPerSecond: null };
  }
  log(
    `schedule: ${schedule.map((l) => `${l.id} ${l.filters.join('/')} (${((costs[l.id]?.multiplyAdds ?? 0) / 1e6).toFixed(2)} M mult-adds)`).join(' -> ')}; ` +
      `recipe: ${recipe.rounds} rounds (patience ${recipe.roundPatience}) x ${recipe.localEpochs} local epochs, then ${fineTuneRounds} fine-tune rounds per level; batch ${recipe.batchSize}, lr ${recipe.learningRate}, mu ${recipe.proximalMu}, augmentation copies ${recipe.augmentCopies}`,
  );

  const pool = await createTrainingPool({ workers, backend: parseBackendChoice(o.backend) });
  const fullModel = models.get('full') as tfl.LayersModel;
  const folds: FoldPruning[] = [];
  let measured = !o.throughput;
  try {
    for (const seed of seeds) {
      for (const f of patientWiseFolds(dataset.images, k, seed)) {
        if (only !== null && !only.has(f.fold)) continue;
        const tf0 = Date.now();
        const foldSeed = mixSeed(seed, 1000 + f.fold);
        const siteImages = foldSites(f.train, nSites, valFraction, foldSeed);
        const { sites, pooled, test } = foldData(decoded, siteImages, f.test);
        const init = buildModel(spec, foldSeed);
        const initial = getWeights(init);
        init.dispose();
        const tag = `seed ${seed} fold ${f.fold + 1}/${k}`;
        log(`${tag}: test ${new Set(f.test.map((i) => i.patientId)).size} patients (${f.test.length} images); sites ${siteImages.map((x) => `${x.train.length}+${x.validation.length}`).join(', ')} (train+validation images)`);
        const ctx: FoldContext = { fold: f.fold, seed: foldSeed, recipe, pool, initial, evalModel: fullModel, sites, pooled, test, log };
        const trained = await federated(ctx);
        const fullWeights = trained.weights as NamedTensor[];
        const full = testScore(fullModel, fullWeights, test, spec, trained.trained, trained.kept);
        log(`  ${tag} unpruned: test balanced ${full.balancedAccuracy.toFixed(3)}, AUC ${full.auc?.toFixed(3) ?? '-'} (kept round ${trained.kept} of ${trained.trained})`);
        const fedSites = federatedSites(ctx);
        if (!measured) {
          const r = await throughput(pool, recipe, spec, fullWeights, fedSites[0].train, test, fullModel);
          costs.full = { ...(costs.full as LevelCost), trainImagesPerSecond: r.train, inferImagesPerSecond: r.infer };
        }
        const pruned = {} as Record<Ranking, Partial<Record<LevelId, LevelScore>>>;
        for (const ranking of rankings) {
          pruned[ranking] = {};
          let cur = { spec, weights: fullWeights };
          for (let li = 1; li < schedule.length; li++) {
            const level = schedule[li];
            const prevModel = models.get(schedule[li - 1].id) as tfl.LayersModel;
            let scores: number[][];
            if (ranking === 'seGate') {
              // Each site: its mean gates over its own training images (numbers only); the coordinator: the image-weighted mean.
              setWeights(prevModel, cur.weights);
              const reports = sites.map((s) => seGateStatistics(prevModel, cur.spec, s.train));
              scores = aggregateGateStatistics(reports).gates.map((g) => [...g]);
            } else {
              scores = weightNormScores(cur.spec, cur.weights);
            }
            const p = pruneWeights(cur.spec, cur.weights, keepTopChannels(scores, level.filters));
            const want = levelSpec(level);
            if (JSON.stringify(p.spec) !== JSON.stringify(want)) throw new Error(`level ${level.id}: pruned spec ${JSON.stringify(p.spec)} differs from ${JSON.stringify(want)}`);
            const model = models.get(level.id) as tfl.LayersModel;
            const ft = await fineTune(ctx, model, p.spec, p.weights, fedSites, fineTuneRounds, 700 + 10 * li + 100 * RANKINGS.indexOf(ranking), `${ranking} ${level.id}`);
            const score = testScore(model, ft.weights, test, p.spec, fineTuneRounds, ft.round);
            pruned[ranking][level.id] = score;
            log(
              `  ${tag} ${ranking} ${level.id} (${level.filters.join('/')}): test balanced ${score.balancedAccuracy.toFixed(3)} ` +
                `(${score.balancedAccuracy >= full.balancedAccuracy ? '+' : ''}${(100 * (score.balancedAccuracy - full.balancedAccuracy)).toFixed(1)} pts), AUC ${score.auc?.toFixed(3) ?? '-'}, kept fine-tune round ${ft.round}`,
            );
            if (!measured && ranking === rankings[0]) {
              const r = await throughput(pool, recipe, p.spec, ft.weights, fedSites[0].train, test, model);
              costs[level.id] = { ...(costs[level.id] as LevelCost), trainImagesPerSecond: r.train, inferImagesPerSecond: r.infer };
            }
            cur = { spec: p.spec, weights: ft.weights };
          }
        }
        measured = true;
        folds.push({ seed, fold: f.fold + 1, full, pruned });
        log(`  ${tag}: ${((Date.now() - tf0) / 1000).toFixed(0)} s`);
      }
    }
  } finally {
    for (const m of models.values()) m.dispose();
    await pool.close();
  }
  for (const r of RANKINGS) if (!rankings.includes(r)) for (const f of folds) (f.pruned as Record<Ranking, unknown>)[r] = {};

  const summary = summarizePruning(schedule, costs, folds);
  const wallSeconds = (Date.now() - started) / 1000;
  say(
    `\nBreakHis ${path.relative(ROOT, path.resolve(o.data)) || '.'}: ${dataset.images.length} images, ${patients} patients; ${folds.length} patient-wise folds (${k}-fold x seeds ${seeds.join(', ')}), ` +
      `${spec.kind} ${spec.imageSize} px (COMPACT_RUN_MODEL), ${nSites} federated sites (in-process simulation: FedProx + FedAvg)`,
  );
  say(
    `Iterative pruning ${schedule.map((l) => l.id).join(' -> ')}, ${fineTuneRounds} federated fine-tune rounds per level. Test stage-1 balanced accuracy and AUC: mean ± sd over folds (%); ` +
      `change = paired per-fold difference to the unpruned model (points); update B = float32 weights a site sends per round; images/s measured on the first fold.`,
  );
  for (const ranking of rankings) {
    say(`\n${ranking === 'seGate' ? 'SE-gate ranking (site means aggregated by image count)' : 'weight-norm ranking (baseline)'}:`);
    for (const line of levelTable(summary, ranking)) say(line);
  }
  say('\nTarget (issue 18): at half the multiply-adds, balanced accuracy within 1 point of the unpruned model');
  for (const ranking of rankings) say(`  ${targetLine(summary, ranking)}`);
  say(wallTimeLine(wallSeconds));
  result({
    dataset: path.relative(ROOT, path.resolve(o.data)) || '.',
    images: dataset.images.length,
    patients,
    folds: k,
    foldsRun: folds.length,
    seeds,
    model: spec,
    sites: nSites,
    recipe: {
      batchSize: recipe.batchSize,
      learningRate: recipe.learningRate,
      rounds: recipe.rounds,
      roundPatience: recipe.roundPatience,
      minRounds: recipe.minRounds,
      localEpochs: recipe.localEpochs,
      proximalMu: recipe.proximalMu,
      augmentCopies: recipe.augmentCopies,
      monitor: recipe.monitor,
      fineTuneRounds,
      channelMultiple: multiple,
      valFraction,
    },
    schedule,
    levels: LEVEL_IDS,
    rankings: Object.fromEntries(rankings.map((r) => [r, summary.rankings[r]])),
    target: Object.fromEntries(rankings.map((r) => [r, summary.target[r]])),
    perFold: folds,
    federation: 'in-process simulation of the federation math (FedProx local training + sample-weighted FedAvg), as bench:accuracy',
    backend: backend.name,
    workers,
    cpus: os.cpus().length,
    wallSeconds: round(wallSeconds, 1),
  });
}

runBench<Options>(
  new Command('npm run bench:prune --')
    .description('SE-gate-guided structured channel pruning of the compact SE-CNN with federated fine-tuning, on patient-wise folds of real BreakHis images')
    .option('--data <dir>', 'BreakHis tree', DEFAULT_SAMPLE)
    .option('--folds <k>', 'patient-wise folds', '5')
    .option('--only-folds <list>', 'run only these 1-based folds, e.g. 1,2 (quick: 1,2)')
    .option('--seeds <list>', 'repeat the k folds with each of these seeds (default 1,2,3; quick: 1)')
    .option('--rounds <n>', 'unpruned model: maximum federated rounds (default 20; quick: 4)')
    .option('--round-patience <n>', 'unpruned model: rounds without a better validation loss before stopping (default 8; quick: 2)')
    .option('--min-rounds <n>', 'unpruned model: rounds before stopping or keeping a round', '1')
    .option('--local-epochs <n>', 'local epochs per federated round', '1')
    .option('--fine-tune-rounds <n>', 'federated fine-tune rounds after each pruning step (default 5; quick: 1)')
    .option('--batch <n>', 'batch size', '16')
    .option('--lr <x>', 'Adam learning rate', '0.001')
    .option('--mu <x>', 'FedProx proximal coefficient', '0.01')
    .option('--augment-copies <n>', 'versions of each training image (original + n-1 seeded augmentations)', '3')
    .option('--sites <n>', 'simulated sites', '3')
    .option('--val-fraction <x>', "share of each site's patients held out for validation", '0.2')
    .option('--multiple <n>', 'pruned filter counts are multiples of this (the wasm kernels\' SIMD paths want 4)', '4')
    .option('--rankings <list>', `rankings to run, of ${RANKINGS.join(', ')}`, RANKINGS.join(','))
    .option('--workers <n>', 'training worker threads', '2')
    .option('--backend <name>', 'auto, wasm, cpu, tensorflow', 'auto')
    .option('--no-throughput', 'skip the images/s measurements')
    .option('--cache-dir <dir>', 'decoded-image cache (default ~/.cache/histofed/images)')
    .option('--no-cache', 'decode without the on-disk cache')
    .option('--quick', 'smoke run: seed 1, folds 1-2, 4 rounds (patience 2), 1 fine-tune round per level')
    .option('--json', 'print one JSON line on stdout'),
  main,
);
