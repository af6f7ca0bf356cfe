/**
 * npm run bench:active [-- --json]: active learning on the real BreakHis sample (issue 16, part 3).
 * See bench/active/README.md for the design.
 *
 * The sample is dealt to IID simulated sites; per patient-wise fold (folds x seeds) each site's
 * training patients are its pool, of which a share of the patients start labelled. The default model
 * (heads on cached frozen-backbone tile features) is trained by an in-process federation
 * (bench/domain/federation.ts, FedAvg); each cycle every site ranks its unlabelled images with the
 * current global model (libs/inference rankForLabelling, with its per-patient diversity cap), the
 * top `budget` images' labels are revealed, and the federation continues a few rounds from the
 * global model. The `ensemble` strategy ranks with the models the federation has at that point: the
 * sites' local models of the last round (their updates before FedAvg) and the global model. The
 * central test balanced accuracy after each cycle gives the learning curve; the full-label
 * federation (same total rounds) is the reference.
 */
import { Command } from 'commander';
import * as os from 'node:os';
import * as path from 'node:path';
import { weightedAverage } from '@histofed/aggregation';
import { DEFAULT_RUN_MODEL, type LabeledImages, type ModelSpec, type NamedTensor } from '@histofed/fl-core';
import {
  assertHasImages,
  mulberry32,
  patientWiseFolds,
  readBreakHisTree,
  type BreakHisImage,
} from '@histofed/data';
import { SUGGEST_STRATEGIES, rankForLabelling, type Candidate, type SuggestStrategy } from '@histofed/inference';
import {
  buildModel,
  buildModelAsync,
  dataRowShape,
  getWeights,
  mcDropoutPasses,
  mixSeed,
  mutualInformation,
  parseBackendChoice,
  perImage,
  predictiveEntropy,
  resolveBackbone,
  selectBackend,
  setWeights,
  trainLocal,
} from '@histofed/ml';
import type * as tfl from '@tensorflow/tfjs-layers';
import { reporter, runBench, wallTimeLine } from '../lib/bench-output';
import { loadTileFeatureSet } from '../lib/tile-features';
import { int, ints, num } from '../lib/cli-options';
import { slice, type DecodedSet } from '../accuracy/data-slices';
import { meanStd } from '../accuracy/stats';
import {
  classWeightsOf,
  ensembleScores,
  federate,
  imageProbabilities,
  layoutOf,
  type FederateContext,
  type FedRecipe,
  type FoldData,
  type Scores,
} from '../domain/federation';
import { dealHospitals } from '../domain/hospitals';
import { memberDisagreement } from './members';
import { labelFractionToFullAccuracy, meanCurve, siteBudget, startPatients, targetMet, type CurvePoint } from './summary';

const ROOT = path.resolve(__dirname, '../..');
const DEFAULT_SAMPLE = path.resolve(ROOT, '../shared/data/breakhis-sample');
const FEDAVG = { proximalMu: 0, fedbn: false, alignment: null, stain: 'none' } as const;
const UNCERTAINTY: readonly SuggestStrategy[] = ['entropy', 'margin', 'bald', 'ensemble'];
const CLASS_NAMES = ['benign', 'malignant'];

interface Options {
  data: string;
  folds: string;
  seeds?: string;
  sites: string;
  start: string;
  budget: string;
  cycles?: string;
  initialRounds?: string;
  rounds?: string;
  localEpochs: string;
  passes?: string;
  strategies: string;
  batch: string;
  lr: string;
  backend: string;
  cacheDir?: string;
  cache: boolean;
  quick?: boolean;
  json?: boolean;
}

const r4 = (x: number | null) => (x === null || !Number.isFinite(x) ? null : Number(x.toFixed(4)));
const pct = (x: number) => `${(100 * x).toFixed(1)}`;

/** Mean tile-feature rows of each image of grid data (coreset). */
function meanFeatures(data: LabeledImages): Float32Array[] {
  const per = dataRowShape(data).reduce((a, b) => a * b, 1);
  const imageOf = data.imageOf ?? Int32Array.from({ length: data.count }, (_, i) => i);
  const n = Math.max(-1, ...imageOf) + 1;
  const out = Array.from({ length: n }, () => new Float32Array(per));
  const counts = new Array<number>(n).fill(0);
  for (let r = 0; r < data.count; r++) {
    const f = out[imageOf[r]];
    const row = data.images.subarray(r * per, (r + 1) * per);
    for (let j = 0; j < per; j++) f[j] += row[j];
    counts[imageOf[r]]++;
  }
  out.forEach((f, i) => f.forEach((_, j) => (f[j] /= counts[i])));
  return out;
}

/** A federation's result as the queries need it. */
interface Federated {
  readonly central: Scores;
  readonly global: NamedTensor[];
  /** The sites' local models of the last round: each participating site's update before FedAvg. */
  readonly locals: NamedTensor[][];
}

/**
 * FedAvg for `ctx.recipe.rounds` rounds (the last one kept), keeping the sites' updates of the last
 * round, which federate() does not return (the `ensemble` strategy's members): federate() runs the
 * first rounds - 1 rounds, and the last round is run here as federate() runs a FedAvg round (each
 * site with labelled images trains `localEpochs` from the global model with its balanced class
 * weights and federate()'s per-site, per-round seed; then the average weighted by training images),
 * so the global model is the one federate() would have kept.
 */
async function federateKeepingLocals(ctx: FederateContext, data: FoldData): Promise<Federated> {
  const { recipe } = ctx;
  const rounds = recipe.rounds;
  let global: readonly NamedTensor[] = ctx.initial;
  if (rounds > 1) global = (await federate({ ...ctx, recipe: { ...recipe, rounds: rounds - 1, minRounds: rounds - 1 } }, data, FEDAVG)).global;
  const participants = data.sites.map((s, i) => ({ s, i })).filter(({ s }) => s.train.count > 0);
  if (participants.length === 0) throw new Error(`${ctx.tag}: no site has training images`);
  const model = buildModel(recipe.spec, 1);
  const locals: NamedTensor[][] = [];
  try {
    for (const { s, i } of participants) {
      setWeights(model, global);
      await trainLocal(model, s.train, {
        epochs: recipe.localEpochs,
        batchSize: recipe.batchSize,
        learningRate: recipe.learningRate,
        proximalMu: FEDAVG.proximalMu,
        globalWeights: global,
        seed: mixSeed(mixSeed(ctx.seed, 400 + i), rounds),
        ...classWeightsOf(s.train, recipe.spec),
      });
      locals.push(getWeights(model));
    }
  } finally {
    model.dispose();
  }
  const next = weightedAverage(locals, participants.map(({ s }) => s.trainImages));
  return { central: ensembleScores(ctx.evalModel, [next], data.test, layoutOf(recipe.spec)), global: next, locals };
}

interface RankEnv {
  readonly evalModel: tfl.LayersModel;
  readonly spec: ModelSpec;
  readonly set: DecodedSet;
  readonly passes: number;
}

/**
 * The images of `unlabelled` to label next, ranked by `strategy` with the current global model
 * (`ensemble`: with the ensemble of the global model and the sites' last local models, `locals`).
 */
async function query(
  env: RankEnv,
  fed: Pick<Federated, 'global' | 'locals'>,
  unlabelled: readonly BreakHisImage[],
  labelled: readonly BreakHisImage[],
  strategy: SuggestStrategy,
  budget: number,
  seed: number,
): Promise<string[]> {
  const { global } = fed;
  const layout = layoutOf(env.spec);
  const k = layout.numClasses;
  const width = k + (layout.subtypeParents?.length ?? 0);
  const grid = slice(env.set, unlabelled);
  const ensemble = strategy === 'ensemble' ? memberDisagreement([global, ...fed.locals].map((m) => imageProbabilities(env.evalModel, m, grid, layout)), layout) : null;
  const probs = ensemble ? ensemble.probabilities : imageProbabilities(env.evalModel, global, grid, layout);
  let mi: number[] | null = null;
  if (strategy === 'bald') {
    setWeights(env.evalModel, global);
    const runs = await mcDropoutPasses(env.evalModel, grid.images, grid.count, dataRowShape(grid), { passes: env.passes, seed });
    const passes = runs.map((r) => perImage(grid, r, layout).probabilities);
    mi = unlabelled.map((_, i) => mutualInformation(passes.map((p) => p.subarray(i * width, (i + 1) * width)), k));
  }
  const features = strategy === 'coreset' ? meanFeatures(grid) : null;
  const tiles = new Array<number>(unlabelled.length).fill(0);
  for (const i of grid.imageOf ?? []) tiles[i]++;
  const candidates: Candidate[] = unlabelled.map((img, i) => {
    const p = probs.subarray(i * width, i * width + k);
    const c = p[1] > p[0] ? 1 : 0;
    return {
      file: img.path,
      patient: img.patientId,
      stage1: { class: CLASS_NAMES[c], probability: p[c], probabilities: Object.fromEntries(CLASS_NAMES.map((n, j) => [n, p[j]])) },
      subtype: null,
      uncertainty: {
        entropy: predictiveEntropy(probs, k, i * width),
        tiles: tiles[i],
        tileDisagreement: 0,
        ...(mi ? { mcDropoutMutualInformation: mi[i] } : {}),
        ...(ensemble ? { memberMutualInformation: ensemble.mutualInformation[i] } : {}),
      },
      ...(features ? { features: features[i] } : {}),
    };
  });
  const labelledFeatures = strategy === 'coreset' && labelled.length > 0 ? meanFeatures(slice(env.set, labelled)) : undefined;
  return rankForLabelling(candidates, { strategy, budget, seed, ...(labelledFeatures ? { labelledFeatures } : {}) }).queue.map((q) => q.file);
}

interface Fold {
  readonly tag: string;
  readonly seed: number;
  readonly foldSeed: number;
  /** Each site's training patients' images (its pool). */
  readonly pools: BreakHisImage[][];
  readonly start: Set<string>[];
  readonly test: BreakHisImage[];
  readonly initial: NamedTensor[];
}

async function main(o: Options): Promise<void> {
  const started = Date.now();
  const { say, result } = reporter(Boolean(o.json));
  const log = (line: string) => process.stderr.write(line + '\n');
  const quick = Boolean(o.quick);
  const k = int('folds', o.folds, 2);
  const seeds = ints('seeds', o.seeds ?? (quick ? '1' : '1,2,3,4,5'), 0);
  const nSites = int('sites', o.sites, 1);
  const startFraction = num('start', o.start, 0.01, 0.99);
  const budgetFraction = num('budget', o.budget, 0.01, 1);
  const maxCycles = int('cycles', o.cycles ?? (quick ? '2' : String(Math.ceil((1 - startFraction) / budgetFraction - 1e-9))), 1);
  const passes = int('passes', o.passes ?? (quick ? '5' : '10'), 2);
  const strategies = o.strategies.split(',').map((s) => s.trim()) as SuggestStrategy[];
  for (const s of strategies) if (!SUGGEST_STRATEGIES.includes(s)) throw new Error(`--strategies: ${s} is not one of ${SUGGEST_STRATEGIES.join(', ')}`);
  if (!strategies.includes('random')) strategies.push('random');
  const initialRounds = int('initial-rounds', o.initialRounds ?? (quick ? '2' : '6'), 1);
  const cycleRounds = int('rounds', o.rounds ?? (quick ? '1' : '3'), 1);

  const dataset = assertHasImages(await readBreakHisTree(path.resolve(o.data)));
  const all = dataset.images;
  const patients = new Set(all.map((i) => i.patientId)).size;
  log(`data: ${all.length} images, ${patients} patients (${o.data})`);
  const backend = await selectBackend(parseBackendChoice(o.backend));
  const base = DEFAULT_RUN_MODEL;
  const resolved = await resolveBackbone(base.backbone as NonNullable<ModelSpec['backbone']>, {}, base.imageSize);
  const spec: ModelSpec = { ...base, backbone: resolved.spec };
  const recipe = (rounds: number): FedRecipe => ({
    spec,
    batchSize: int('batch', o.batch, 1),
    learningRate: num('lr', o.lr, 1e-6, 1),
    rounds,
    // The last round is kept: no labelled validation patients to choose one (labels are scarce).
    minRounds: rounds,
    roundPatience: 1,
    localEpochs: int('local-epochs', o.localEpochs, 1),
  });

  const set = await loadTileFeatureSet(all, spec, { cacheDir: o.cacheDir, cache: o.cache, log });
  log(`backend ${backend.name}`);

  const hospitals = dealHospitals(all, 'iid', { sites: nSites, seed: 0, alpha: 1, minPatients: 2, stainStrength: 1 });
  hospitals.describe.forEach((d) => log(`  ${d}`));
  const folds: Fold[] = [];
  for (const seed of seeds) {
    for (const f of patientWiseFolds(all, k, seed)) {
      const foldSeed = mixSeed(seed, 1000 + f.fold);
      const test = new Set(f.test.map((i) => i.path));
      const pools = hospitals.sites.map((s) => s.filter((i) => !test.has(i.path)));
      const start = pools.map((pool, s) => {
        const ids = [...new Set(pool.map((i) => i.patientId))].sort();
        const next = mulberry32(mixSeed(foldSeed, 50 + s));
        for (let i = ids.length - 1; i > 0; i--) {
          const j = Math.floor(next() * (i + 1));
          [ids[i], ids[j]] = [ids[j], ids[i]];
        }
        const chosen = new Set(ids.slice(0, startPatients(ids.length, startFraction)));
        return new Set(pool.filter((i) => chosen.has(i.patientId)).map((i) => i.path));
      });
      const init = await buildModelAsync(spec, foldSeed);
      const initial = getWeights(init);
      init.dispose();
      folds.push({ tag: seeds.length > 1 ? `seed ${seed} fold ${f.fold + 1}/${k}` : `fold ${f.fold + 1}/${k}`, seed, foldSeed, pools, start, test: f.test, initial });
    }
  }
  log(
    `model ${spec.kind} ${JSON.stringify(spec.options)} on ${resolved.spec.cut}; ${k} folds x seeds ${seeds.join(',')}; ${nSites} IID sites; ` +
      `start ${startFraction} of each site's training patients labelled, budget ${budgetFraction} of its pool per cycle, ${maxCycles} cycles; ` +
      `FedAvg ${initialRounds} rounds, then ${cycleRounds} per cycle (warm start) x ${recipe(1).localEpochs} local epochs; strategies ${strategies.join(', ')}; ${passes} MC dropout passes`,
  );

  const evalModel = await buildModelAsync(spec, 1);
  const env: RankEnv = { evalModel, spec, set, passes };
  const curves = new Map<SuggestStrategy, CurvePoint[][]>(strategies.map((s) => [s, []]));
  const full: number[] = [];
  const quiet = () => undefined;
  try {
    for (const fold of folds) {
      const ft = Date.now();
      const testData = slice(set, fold.test);
      const poolImages = fold.pools.reduce((n, p) => n + p.length, 0);
      const train = async (labelled: readonly Set<string>[], initial: readonly NamedTensor[], rounds: number, salt: number) => {
        const siteImages = fold.pools.map((p, s) => p.filter((i) => labelled[s].has(i.path)));
        const any = siteImages.flat();
        const data: FoldData = {
          sites: siteImages.map((imgs) => ({ train: slice(set, imgs, true), trainImages: imgs.length, validation: null, test: null })),
          // Unused for the choice (the last round is kept); the labelled images, for the log only.
          validation: slice(set, any),
          test: testData,
        };
        return federateKeepingLocals({ recipe: recipe(rounds), initial, evalModel, seed: mixSeed(fold.foldSeed, salt), log: quiet, tag: fold.tag }, data);
      };
      const fraction = (labelled: readonly Set<string>[]) => labelled.reduce((n, l) => n + l.size, 0) / poolImages;
      const totalRounds = initialRounds + maxCycles * cycleRounds;
      const fullRun = await train(fold.pools.map((p) => new Set(p.map((i) => i.path))), fold.initial, totalRounds, 900);
      full.push(fullRun.central.balancedAccuracy);
      const startRun = await train(fold.start, fold.initial, initialRounds, 0);
      log(`  ${fold.tag}: pool ${fold.pools.map((p) => p.length).join('/')} images, test ${fold.test.length}; full labels (${totalRounds} rounds) ${fullRun.central.balancedAccuracy.toFixed(3)}; start ${pct(fraction(fold.start))} % labelled ${startRun.central.balancedAccuracy.toFixed(3)}`);
      for (const strategy of strategies) {
        const labelled = fold.start.map((s) => new Set(s));
        let fed: Federated = startRun;
        const curve: CurvePoint[] = [{ labelFraction: fraction(labelled), balancedAccuracy: startRun.central.balancedAccuracy }];
        for (let cycle = 1; cycle <= maxCycles; cycle++) {
          for (let s = 0; s < fold.pools.length; s++) {
            const unlabelled = fold.pools[s].filter((i) => !labelled[s].has(i.path));
            if (unlabelled.length === 0) continue;
            const budget = siteBudget(fold.pools[s].length, unlabelled.length, budgetFraction);
            const done = fold.pools[s].filter((i) => labelled[s].has(i.path));
            for (const file of await query(env, fed, unlabelled, done, strategy, budget, mixSeed(fold.foldSeed, 100 * cycle + s))) labelled[s].add(file);
          }
          fed = await train(labelled, fed.global, cycleRounds, cycle);
          curve.push({ labelFraction: fraction(labelled), balancedAccuracy: fed.central.balancedAccuracy });
        }
        curves.get(strategy)?.push(curve);
        log(`    ${fold.tag} ${strategy.padEnd(8)}: ${curve.map((p) => `${pct(p.labelFraction)}% ${p.balancedAccuracy.toFixed(3)}`).join(', ')}`);
      }
      log(`  ${fold.tag}: ${((Date.now() - ft) / 1000).toFixed(0)} s`);
    }
  } finally {
    evalModel.dispose();
  }

  const fullMs = meanStd(full);
  const means = new Map(strategies.map((s) => [s, meanCurve(curves.get(s) ?? [])]));
  const random = means.get('random') ?? [];
  const out = {
    dataset: path.relative(ROOT, path.resolve(o.data)) || '.',
    images: all.length,
    patients,
    sites: nSites,
    folds: k,
    seeds,
    foldsRun: folds.length,
    model: spec,
    schedule: { startPatientFraction: startFraction, budgetFractionPerCycle: budgetFraction, cycles: maxCycles, initialRounds, roundsPerCycle: cycleRounds, localEpochs: recipe(1).localEpochs, fullLabelRounds: initialRounds + maxCycles * cycleRounds, mcDropoutPasses: passes },
    fullLabelBalancedAccuracy: r4(fullMs.mean),
    fullLabelBalancedAccuracySd: r4(fullMs.std),
    strategies: Object.fromEntries(
      strategies.map((s) => {
        const curve = means.get(s) ?? [];
        return [
          s,
          {
            curve,
            labelFractionToFullAccuracy: labelFractionToFullAccuracy(curve, fullMs.mean),
            ...(s === 'random' ? {} : { vsRandom: targetMet(curve, random, fullMs.mean) }),
          },
        ];
      }),
    ),
    target: Object.fromEntries(strategies.filter((s) => UNCERTAINTY.includes(s)).map((s) => [s, targetMet(means.get(s) ?? [], random, fullMs.mean).met])),
    backend: backend.name,
    cpus: os.cpus().length,
    wallSeconds: Number(((Date.now() - started) / 1000).toFixed(1)),
  };

  say(`\nBreakHis ${out.dataset}: ${all.length} images, ${patients} patients; ${nSites} IID sites; ${folds.length} patient-wise folds (${k} folds x seeds ${seeds.join(', ')})`);
  say(`Full-label federated balanced accuracy (${out.schedule.fullLabelRounds} rounds): ${pct(fullMs.mean)} ± ${pct(fullMs.std)} %`);
  say(`Learning curve: test balanced accuracy (%, mean ± sd over folds) at the mean labelled fraction of the sites' training images:`);
  const fractions = (means.get(strategies[0]) ?? []).map((p) => `${pct(p.labelFraction)} %`);
  say(`${'strategy'.padEnd(9)} ${fractions.map((f) => f.padStart(12)).join('')}  to full`);
  for (const s of strategies) {
    const c = means.get(s) ?? [];
    const f = labelFractionToFullAccuracy(c, fullMs.mean);
    say(`${s.padEnd(9)} ${c.map((p) => `${pct(p.balancedAccuracy)}±${pct(p.balancedAccuracySd)}`.padStart(12)).join('')}  ${f === null ? 'never' : `${pct(f)} %`}`);
  }
  for (const s of strategies.filter((x) => x !== 'random')) {
    const t = targetMet(means.get(s) ?? [], random, fullMs.mean);
    say(`${s}: full-label accuracy with <= 50 % of the labels: ${t.reachesFullByHalf ? 'yes' : 'no'}; above random at every budget: ${t.aboveRandom ? 'yes' : 'no'}${UNCERTAINTY.includes(s) ? ` -> target ${t.met ? 'met' : 'NOT met'}` : ''}`);
  }
  say(wallTimeLine(out.wallSeconds));
  result(out);
}

runBench<Options>(
  new Command('npm run bench:active --')
    .description('Active learning on patient-wise folds of real BreakHis images: learning curves of the suggest strategies against random, federated')
    .option('--data <dir>', 'BreakHis tree', DEFAULT_SAMPLE)
    .option('--folds <k>', 'patient-wise folds', '3')
    .option('--seeds <list>', 'repeat the folds with each seed (default 1,2,3,4,5; --quick 1)')
    .option('--sites <n>', 'simulated IID sites', '3')
    .option('--start <x>', "share of each site's training patients labelled at the start", '0.2')
    .option('--budget <x>', "images queried per site and cycle, as a share of the site's training images", '0.1')
    .option('--cycles <n>', 'query cycles (default: until everything is labelled; --quick 2)')
    .option('--initial-rounds <n>', 'federated rounds on the starting labels (default 6, --quick 2)')
    .option('--rounds <n>', 'federated rounds per cycle, from the current global model (default 3, --quick 1)')
    .option('--local-epochs <n>', 'local epochs per round', '1')
    .option('--passes <n>', 'MC dropout passes for bald (default 10, --quick 5)')
    .option('--strategies <list>', 'strategies (random is always run)', 'entropy,margin,bald,ensemble,coreset,random')
    .option('--batch <n>', 'batch size', '32')
    .option('--lr <x>', 'learning rate', '0.001')
    .option('--backend <name>', 'auto, wasm, cpu, tensorflow', 'auto')
    .option('--cache-dir <dir>', 'cache root (features under <dir>/features; default ~/.cache/histofed)')
    .option('--no-cache', 'compute the tile features without the on-disk cache')
    .option('--quick', 'one seed, 2 cycles, few rounds: a smoke run')
    .option('--json', 'print one JSON line on stdout'),
  main,
);
