/**
 * npm run bench:uncertainty [-- --json]: calibration and the review flag of the default model on the
 * real BreakHis sample (issue 15, part 5). See bench/uncertainty/README.md for the design.
 *
 * Patient-wise folds (folds x seeds); per fold the default model (heads with dropout on frozen
 * ImageNet MobileNetV2 tile features) is trained centrally with bench:accuracy's regime on the
 * training patients, with early stopping on a patient-wise validation split of them and no refit
 * (the validation patients stay unseen by the weights: they fit the temperature and the review
 * thresholds). On the test patients: ECE before / after temperature scaling, and for each
 * uncertainty measure the AUROC of "uncertain" vs "wrong" and the accuracy of the unflagged images
 * at 10/20/30 % review rates with thresholds chosen on validation. Progress on stderr; a summary on
 * stdout, or one JSON line with --json.
 */
import { Command } from 'commander';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_RUN_MODEL, type ModelSpec } from '@histofed/fl-core';
import {
  DEFAULT_AUGMENTATION,
  assertHasImages,
  patientWiseFolds,
  patientWiseSplit,
  readBreakHisTree,
} from '@histofed/data';
import {
  UNCERTAINTY_MEASURES,
  buildModelAsync,
  createTrainingPool,
  expectedCalibrationError,
  mixSeed,
  parseBackendChoice,
  reliabilityTable,
  resolveBackbone,
  riskCoverage,
  selectBackend,
  type RiskCoveragePoint,
  type UncertaintyMeasure,
} from '@histofed/ml';
import { reporter, runBench, wallTimeLine } from '../lib/bench-output';
import { loadTileFeatureSet } from '../lib/tile-features';
import { int, ints, num } from '../lib/cli-options';
import { slice } from '../accuracy/data-slices';
import type { Recipe } from '../accuracy/regimes';
import { meanStd } from '../accuracy/stats';
import { runFold, type FoldScores } from './fold';
import { chooseMeasure, reviewFold, summarizeSelective, targets, type MeasureFold } from './summary';

const ROOT = path.resolve(__dirname, '../..');
const DEFAULT_SAMPLE = path.resolve(ROOT, '../shared/data/breakhis-sample');
const RATES = [0.1, 0.2, 0.3] as const;
const CURVE_RATES = [0, 0.1, 0.2, 0.3, 0.4, 0.5];

interface Options {
  data: string;
  folds: string;
  seeds?: string;
  members?: string;
  passes?: string;
  dropout: string;
  valFraction: string;
  epochs?: string;
  minEpochs?: string;
  patience?: string;
  backend: string;
  cacheDir?: string;
  cache: boolean;
  quick?: boolean;
  json?: boolean;
}

interface FoldRecord {
  readonly seed: number;
  readonly fold: number;
  readonly scores: FoldScores;
  readonly measures: Record<string, MeasureFold>;
  readonly chosen: UncertaintyMeasure;
  /** The chosen measure's risk-coverage curve on test with thresholds set on the test scores (shape only, not a deployable rule). */
  readonly curve: RiskCoveragePoint[];
}

const r4 = (x: number | null) => (x === null || !Number.isFinite(x) ? null : Number(x.toFixed(4)));
const pct = (x: number | null) => (x === null ? '   -  ' : `${(100 * x).toFixed(1)}`.padStart(6));

async function main(o: Options): Promise<void> {
  const started = Date.now();
  const { say, result } = reporter(Boolean(o.json));
  const log = (line: string) => process.stderr.write(line + '\n');
  const quick = Boolean(o.quick);
  const k = int('folds', o.folds, 2);
  const seeds = ints('seeds', o.seeds ?? (quick ? '1' : '1,2,3'), 0);
  const members = int('members', o.members ?? (quick ? '2' : '4'), 1);
  const passes = int('passes', o.passes ?? (quick ? '5' : '20'), 2);
  const valFraction = num('val-fraction', o.valFraction, 0.05, 0.5);
  const maxEpochs = int('epochs', o.epochs ?? (quick ? '4' : '30'), 1);
  const measures = UNCERTAINTY_MEASURES.filter((m) => m !== 'memberMutualInformation' || members > 1);
  // The default rule is for the default (single) model: member disagreement needs an ensemble, so it is measured but not a candidate.
  const candidates: UncertaintyMeasure[] = measures.filter((m) => m !== 'memberMutualInformation');

  const dataset = assertHasImages(await readBreakHisTree(path.resolve(o.data)));
  const images = dataset.images;
  const patients = new Set(images.map((i) => i.patientId)).size;
  log(`data: ${images.length} images, ${patients} patients (${o.data})`);
  const backend = await selectBackend(parseBackendChoice(o.backend));
  const base = DEFAULT_RUN_MODEL;
  const resolved = await resolveBackbone(base.backbone as NonNullable<ModelSpec['backbone']>, {}, base.imageSize);
  const spec: ModelSpec = { ...base, backbone: resolved.spec, options: { ...base.options, dropout: num('dropout', o.dropout, 0.01, 0.9) } };
  const recipe: Recipe = {
    spec,
    batchSize: 32,
    learningRate: 1e-3,
    maxEpochs,
    patience: int('patience', o.patience ?? (quick ? '2' : '8'), 1),
    minEpochs: Math.min(maxEpochs, int('min-epochs', o.minEpochs ?? (quick ? '2' : '10'), 1)),
    monitor: 'loss',
    // Only the centralized regime runs; the federated fields are unused.
    rounds: 1,
    localEpochs: 1,
    roundPatience: 1,
    minRounds: 1,
    proximalMu: 0,
    // No refit: the validation patients must stay unseen by the weights they calibrate.
    refit: false,
    augmentCopies: 1,
    augment: DEFAULT_AUGMENTATION,
  };

  // Tile features through the feature cache (the same entries as bench:accuracy and the sites').
  const decoded = await loadTileFeatureSet(images, spec, { cacheDir: o.cacheDir, cache: o.cache, log });
  log(`backend ${backend.name}`);
  log(
    `model ${spec.kind} ${JSON.stringify(spec.options)} on ${resolved.spec.cut}; ${k} folds x seeds ${seeds.join(',')}; validation ${valFraction} of the training patients; ` +
      `epochs <= ${recipe.maxEpochs} (kept from ${recipe.minEpochs}, patience ${recipe.patience}, no refit); ${members} member(s); ${passes} MC dropout passes`,
  );

  const pool = await createTrainingPool({ workers: 1, backend: parseBackendChoice(o.backend) });
  const evalModel = await buildModelAsync(spec, 1);
  const records: FoldRecord[] = [];
  try {
    for (const seed of seeds) {
      for (const f of patientWiseFolds(images, k, seed)) {
        const foldSeed = mixSeed(seed, 1000 + f.fold);
        const tag = `seed ${seed} fold ${f.fold + 1}/${k}`;
        const split = patientWiseSplit(f.train, { testFraction: valFraction, seed: mixSeed(foldSeed, 11) });
        // validationTrain is what a refit would add; with refit off it is never trained on.
        const data = { train: slice(decoded, split.train, true), validation: slice(decoded, split.test), validationTrain: slice(decoded, split.test, true) };
        const t = Date.now();
        log(`  ${tag}: train ${split.train.length} images, validation ${split.test.length} images (${new Set(split.test.map((i) => i.patientId)).size} patients), test ${f.test.length} images`);
        const scores = await runFold(
          { tag, foldSeed, recipe, pool, evalModel, data, test: slice(decoded, f.test), members, passes, log },
          measures,
        );
        const perMeasure = reviewFold(scores.validation, scores.test, measures, RATES);
        const chosen = chooseMeasure(perMeasure, candidates);
        const curve = riskCoverage(scores.test.scores[chosen] as number[], scores.test.correct, CURVE_RATES);
        records.push({ seed, fold: f.fold, scores, measures: perMeasure, chosen, curve });
        const at20 = perMeasure[chosen].selective['0.2'];
        log(
          `  ${tag}: T ${scores.temperature}, ECE ${scores.eceBefore.toFixed(3)} -> ${scores.eceAfter.toFixed(3)}; ` +
            `AUROC ${measures.map((m) => `${m} ${perMeasure[m].auroc?.toFixed(2) ?? '-'}`).join(', ')}; ` +
            `rule ${chosen} (validation AUROC ${perMeasure[chosen].validationAuroc?.toFixed(2) ?? '-'}): at 20 % (test rate ${at20.reviewRate.toFixed(2)}) ` +
            `unflagged ${at20.accuracyUnflagged?.toFixed(3) ?? '-'} vs all ${at20.accuracyAll.toFixed(3)} (${((Date.now() - t) / 1000).toFixed(0)} s)`,
        );
      }
    }
  } finally {
    evalModel.dispose();
    await pool.close();
  }

  const selectiveOf = (pick: (r: FoldRecord) => MeasureFold) =>
    Object.fromEntries(RATES.map((rate) => [String(rate), summarizeSelective(records.map((r) => pick(r).selective[String(rate)]))]));
  const perMeasure = Object.fromEntries(
    measures.map((m) => {
      const auroc = meanStd(records.map((r) => r.measures[m].auroc));
      return [m, { auroc: r4(auroc.mean), aurocSd: r4(auroc.std), validationAuroc: r4(meanStd(records.map((r) => r.measures[m].validationAuroc)).mean), selective: selectiveOf((r) => r.measures[m]) }];
    }),
  );
  const defaultSelective = selectiveOf((r) => r.measures[r.chosen]);
  const choices: Record<string, number> = {};
  for (const r of records) choices[r.chosen] = (choices[r.chosen] ?? 0) + 1;
  const defaultMeasure = Object.entries(choices).sort((a, b) => b[1] - a[1] || candidates.indexOf(a[0] as UncertaintyMeasure) - candidates.indexOf(b[0] as UncertaintyMeasure))[0][0];
  const curve = CURVE_RATES.map((rate, i) => ({
    targetRate: rate,
    reviewRate: r4(meanStd(records.map((r) => r.curve[i].reviewRate)).mean),
    accuracyUnflagged: r4(meanStd(records.map((r) => r.curve[i].accuracyUnflagged)).mean),
  }));
  const eceBefore = meanStd(records.map((r) => r.scores.eceBefore));
  const eceAfter = meanStd(records.map((r) => r.scores.eceAfter));
  const cat = (f: (s: FoldScores) => Float32Array | Int32Array) => records.flatMap((r) => Array.from(f(r.scores)));
  const pooledLabels = Int32Array.from(cat((s) => s.testStage1.labels));
  const pooledBefore = Float32Array.from(cat((s) => s.testStage1.before));
  const pooledAfter = Float32Array.from(cat((s) => s.testStage1.after));
  const temperatures = records.map((r) => r.scores.temperature);
  const mcMs = meanStd(records.map((r) => r.scores.mcDropoutMsPerImage));
  const singleMs = meanStd(records.map((r) => r.scores.singlePassMsPerImage));
  const met = targets(eceBefore.mean, eceAfter.mean, defaultSelective['0.2'].gain);
  const wallSeconds = (Date.now() - started) / 1000;
  const out = {
    dataset: path.relative(ROOT, path.resolve(o.data)) || '.',
    images: images.length,
    patients,
    folds: k,
    seeds,
    foldsRun: records.length,
    model: spec,
    recipe: { batchSize: recipe.batchSize, learningRate: recipe.learningRate, maxEpochs: recipe.maxEpochs, minEpochs: recipe.minEpochs, patience: recipe.patience, monitor: 'validation loss', refit: false, classWeights: 'balanced (both heads)', valFraction },
    members,
    mcDropoutPasses: passes,
    eceBefore: r4(eceBefore.mean),
    eceAfter: r4(eceAfter.mean),
    eceBeforeSd: r4(eceBefore.std),
    eceAfterSd: r4(eceAfter.std),
    temperature: { mean: r4(meanStd(temperatures).mean), min: Math.min(...temperatures), max: Math.max(...temperatures) },
    validationNll: { atOne: r4(meanStd(records.map((r) => r.scores.validationNll.atOne)).mean), fitted: r4(meanStd(records.map((r) => r.scores.validationNll.fitted)).mean) },
    pooled: {
      eceBefore: r4(expectedCalibrationError(pooledLabels, pooledBefore, 2)),
      eceAfter: r4(expectedCalibrationError(pooledLabels, pooledAfter, 2)),
      reliabilityBefore: reliabilityTable(pooledBefore, pooledLabels, 2),
      reliabilityAfter: reliabilityTable(pooledAfter, pooledLabels, 2),
    },
    selective: defaultSelective,
    defaultMeasure,
    defaultMeasureRule: `per fold, the measure of ${candidates.join(', ')} with the highest AUROC (uncertain vs wrong) on the validation images; defaultMeasure is the most frequent choice`,
    defaultMeasureChoices: choices,
    riskCoverage: { measure: 'each fold\'s chosen measure', thresholds: 'set on the test scores themselves (the curve\'s shape, not a deployable rule)', points: curve },
    measures: perMeasure,
    modelTest: {
      balancedAccuracy: r4(meanStd(records.map((r) => r.scores.model.balancedAccuracy)).mean),
      imageAccuracy: r4(meanStd(records.map((r) => r.scores.model.imageAccuracy)).mean),
      patientAccuracy: r4(meanStd(records.map((r) => r.scores.model.patientAccuracy)).mean),
      auc: r4(meanStd(records.map((r) => r.scores.model.auc)).mean),
      keptEpoch: r4(meanStd(records.map((r) => r.scores.keptEpoch)).mean),
    },
    mcDropoutMsPerImage: r4(mcMs.mean),
    singlePassMsPerImage: r4(singleMs.mean),
    targets: met,
    perFold: records.map((r) => ({
      seed: r.seed,
      fold: r.fold + 1,
      temperature: r.scores.temperature,
      eceBefore: r4(r.scores.eceBefore),
      eceAfter: r4(r.scores.eceAfter),
      chosen: r.chosen,
      auroc: Object.fromEntries(measures.map((m) => [m, r4(r.measures[m].auroc)])),
      validationAuroc: Object.fromEntries(measures.map((m) => [m, r4(r.measures[m].validationAuroc)])),
      selective20: { reviewRate: r4(r.measures[r.chosen].selective['0.2'].reviewRate), accuracyUnflagged: r4(r.measures[r.chosen].selective['0.2'].accuracyUnflagged), accuracyAll: r4(r.measures[r.chosen].selective['0.2'].accuracyAll) },
    })),
    backend: backend.name,
    cpus: os.cpus().length,
    wallSeconds: Number(wallSeconds.toFixed(1)),
  };

  say(`\nBreakHis ${out.dataset}: ${images.length} images, ${patients} patients; ${records.length} patient-wise folds (${k} folds x seeds ${seeds.join(', ')})`);
  say(`Model: ${spec.kind} ${JSON.stringify(spec.options)} on frozen ${resolved.spec.cut} features; test balanced accuracy ${pct(out.modelTest.balancedAccuracy)} %, image accuracy ${pct(out.modelTest.imageAccuracy)} %`);
  say(`Calibration (stage 1, test, 10 bins), mean over folds: ECE ${eceBefore.mean.toFixed(3)} ± ${eceBefore.std.toFixed(3)} -> ${eceAfter.mean.toFixed(3)} ± ${eceAfter.std.toFixed(3)} after temperature scaling (T ${out.temperature.min}..${out.temperature.max}, mean ${out.temperature.mean}); pooled ${out.pooled.eceBefore} -> ${out.pooled.eceAfter}`);
  say(`Review rule: thresholds chosen on validation, applied to test; accuracy of unflagged images vs all (%), realised test review rate:`);
  say(`${'measure'.padEnd(28)} ${'AUROC'.padStart(6)} ${RATES.map((r) => `${100 * r} %: unfl.   all  rate`.padStart(24)).join(' ')}`);
  const row = (name: string, auroc: number | null, sel: Record<string, ReturnType<typeof summarizeSelective>>) =>
    say(`${name.padEnd(28)} ${auroc === null ? '     -' : auroc.toFixed(3).padStart(6)} ${RATES.map((r) => { const s = sel[String(r)]; return `${pct(s.accuracyUnflagged)} ${pct(s.accuracyAll)} ${pct(s.reviewRate)}`.padStart(24); }).join(' ')}`);
  for (const m of measures) row(m, perMeasure[m].auroc, perMeasure[m].selective);
  row('default rule (chosen per fold)', null, defaultSelective);
  say(`Default measure chosen per fold on validation AUROC: ${Object.entries(choices).map(([m, n]) => `${m} ${n}`).join(', ')}`);
  say(`Risk-coverage of the chosen measure (test thresholds, shape only): ${curve.map((p) => `${100 * p.targetRate} %: ${pct(p.accuracyUnflagged).trim()}`).join(', ')}`);
  say(`MC dropout (${passes} passes of the heads on cached tile features): ${mcMs.mean.toFixed(2)} ms per image (one plain pass ${singleMs.mean.toFixed(2)} ms)`);
  say(`Targets: temperature scaling halves the ECE: ${met.eceHalved ? 'met' : 'NOT met'}; at 20 % review unflagged >= 5 points above all: ${met.reviewGain5Points ? 'met' : 'NOT met'} (${((defaultSelective['0.2'].gain ?? NaN) * 100).toFixed(1)} points)`);
  say(wallTimeLine(wallSeconds));
  result(out);
}

runBench<Options>(
  new Command('npm run bench:uncertainty --')
    .description('Calibration (temperature scaling) and uncertainty-based review of the default model on patient-wise folds of real BreakHis images')
    .option('--data <dir>', 'BreakHis tree', DEFAULT_SAMPLE)
    .option('--folds <k>', 'patient-wise folds', '3')
    .option('--seeds <list>', 'repeat the folds with each seed (default 1,2,3; --quick 1)')
    .option('--members <n>', 'models per fold from other initial weights, for memberMutualInformation (1 = off; default 4, --quick 2)')
    .option('--passes <n>', 'MC dropout passes (default 20, --quick 5)')
    .option('--dropout <p>', "the heads' dropout rate (the default model's)", String(DEFAULT_RUN_MODEL.options?.['dropout'] ?? 0.25))
    .option('--val-fraction <x>', 'share of the training patients held out for early stopping, temperature and thresholds', '0.25')
    .option('--epochs <n>', 'maximum epochs (default 30, --quick 4)')
    .option('--min-epochs <n>', 'epochs before early stopping may stop or keep weights (default 10, --quick 2)')
    .option('--patience <n>', 'epochs without a lower validation loss before stopping (default 8, --quick 2)')
    .option('--backend <name>', 'auto, wasm, cpu, tensorflow', 'auto')
    .option('--cache-dir <dir>', 'cache root (features under <dir>/features; default ~/.cache/histofed)')
    .option('--no-cache', 'compute the tile features without the on-disk cache')
    .option('--quick', 'one seed, 2 members, 5 passes, a few epochs: a smoke run')
    .option('--json', 'print one JSON line on stdout'),
  main,
);
