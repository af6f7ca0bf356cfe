/**
 * npm run bench:fusion [-- --json]: fusion of image features with a clinical table (issue 19), on
 * patient-wise folds of the real sample with a SYNTHETIC clinical table (libs/data
 * syntheticClinicalCsv: a documented relation to the label, or none) — it demonstrates the
 * mechanism, it is not a clinical claim. Per fold (training patients split patient-wise into
 * training and validation, early stopping on the validation loss, balanced class weights):
 *
 * - image: the default model's heads on the frozen backbone's tile features (no clinical data);
 * - tabular: the fusion heads with every image feature set to 0 (only the record can tell), without
 *   modality dropout;
 * - fused: the fusion heads, concatenation; fusedGated: the gated variant;
 *
 * each trained on the informative table and on the uninformative one (the image model once), tested
 * on the fold's test patients (stage-1 balanced accuracy and AUC). `--json`: {informative: {image,
 * tabular, fused, fusedGated}, uninformative: {...}} (fold means), details, verdicts.
 */
import { Command } from 'commander';
import * as path from 'node:path';
import type { ClinicalSchema, LabeledImages, ModelSpec } from '@histofed/fl-core';
import { DEFAULT_RUN_MODEL } from '@histofed/fl-core';
import { assertHasImages, clinicalWidth, parseClinicalCsv, patientWiseFolds, patientWiseSplit, readBreakHisTree, syntheticClinicalCsv, withClinical, type ClinicalTable } from '@histofed/data';
import { buildModel, evaluateModel, fit, getWeights, mixSeed, patientRowWeights, parseBackendChoice, resolveBackbone, selectBackend, setWeights } from '@histofed/ml';
import { reporter, runBench, wallTimeLine } from '../lib/bench-output';
import { int, ints, num } from '../lib/cli-options';
import { loadTileFeatureSet } from '../lib/tile-features';
import { slice } from '../accuracy/data-slices';
import { trainingWeights } from '../accuracy/regimes';
import { pct } from '../accuracy/stats';
import { MODELS, TABLES, summarizeFusion, type FoldScore, type FusionModel, type Table } from './summary';

const ROOT = path.resolve(__dirname, '../..');
const DEFAULT_SAMPLE = path.resolve(ROOT, '../shared/data/breakhis-sample');

interface Options {
  data: string;
  folds: string;
  seeds: string;
  tableSeed: string;
  missingRate: string;
  dropped: string;
  epochs: string;
  minEpochs: string;
  patience: string;
  batch: string;
  lr: string;
  valFraction: string;
  imageDropout: string;
  recordDropout: string;
  tabularUnits: string;
  backend: string;
  cacheDir?: string;
  cache: boolean;
  patientWeighting?: boolean;
  json?: boolean;
}


/** Rows whose clinical part (after `features` image values) is the no-record encoding: every patient on the model's missing path. */
function withoutRecord(rows: LabeledImages, features: number): LabeledImages {
  const width = (rows.sampleShape as number[])[0];
  const images = Float32Array.from(rows.images);
  for (let r = 0; r < rows.count; r++) {
    images.fill(0, r * width + features, (r + 1) * width);
    images[(r + 1) * width - 1] = 1;
  }
  return { ...rows, images };
}

/** Rows with their image features zeroed (the clinical part kept): what the tabular-only model reads. */
function clinicalOnly(rows: LabeledImages, features: number): LabeledImages {
  const width = (rows.sampleShape as number[])[0];
  const images = Float32Array.from(rows.images);
  for (let r = 0; r < rows.count; r++) images.fill(0, r * width, r * width + features);
  return { ...rows, images };
}

async function main(o: Options): Promise<void> {
  const started = Date.now();
  const { say, result } = reporter(Boolean(o.json));
  const log = (line: string) => process.stderr.write(line + '\n');
  const seeds = ints('seeds', o.seeds, 0);
  const k = int('folds', o.folds, 2);
  const valFraction = num('val-fraction', o.valFraction, 0.05, 0.5);
  const backend = await selectBackend(parseBackendChoice(o.backend));
  const dataset = assertHasImages(await readBreakHisTree(path.resolve(o.data)));
  const resolved = await resolveBackbone(DEFAULT_RUN_MODEL.backbone!, {}, DEFAULT_RUN_MODEL.imageSize);
  const imageSpec: ModelSpec = { ...DEFAULT_RUN_MODEL, backbone: resolved.spec };
  const features = resolved.spec.features;
  const decoded = await loadTileFeatureSet(dataset.images, imageSpec, { cacheDir: o.cacheDir, cache: o.cache, log });

  // The synthetic tables: one row per patient (some dropped, some cells blank), from the patients' labels.
  const patients = [...new Map(dataset.images.map((i) => [i.patientId, i.labelIndex as 0 | 1])).entries()].map(([patientId, label]) => ({ patientId, label }));
  // One pair of tables per fold seed (--table-seed each, the default) or one pair for every fold: a
  // single draw of an uninformative table can correlate with 37 patients' labels by chance.
  const tableSeedOf = (seed: number) => (o.tableSeed === 'each' ? seed : int('table-seed', o.tableSeed, 0));
  const tablesFor = (seed: number) => {
    const tables = {} as Record<Table, { table: ClinicalTable; schema: ClinicalSchema }>;
    for (const t of TABLES) {
      const { csv, schema } = syntheticClinicalCsv(patients, {
        informative: t === 'informative',
        seed: tableSeedOf(seed),
        missingRate: num('missing-rate', o.missingRate, 0, 0.9),
        droppedPatients: int('dropped', o.dropped, 0),
      });
      tables[t] = { table: parseClinicalCsv(csv, schema, `synthetic ${t} table`), schema };
    }
    return tables;
  };
  const tables = tablesFor(seeds[0]);
  const width = clinicalWidth(tables.informative.schema);
  const fusionOptions = {
    imageDropout: num('image-dropout', o.imageDropout, 0, 0.95),
    recordDropout: num('record-dropout', o.recordDropout, 0, 0.95),
    tabularUnits: int('tabular-units', o.tabularUnits, 0),
  };
  const tabularSpec: ModelSpec = { ...imageSpec, options: { ...imageSpec.options, clinicalWidth: width, fusionGate: 0, tabularUnits: 16, recordDropout: 0, imageDropout: 0 } };
  const fusionSpec = (gate: 0 | 1): ModelSpec => ({ ...imageSpec, options: { ...imageSpec.options, clinicalWidth: width, fusionGate: gate, ...fusionOptions } });
  log(`${dataset.images.length} images, ${patients.length} patients; clinical width ${width} (${tables.informative.schema.columns.map((c) => c.name).join(', ')}); backend ${backend.name}`);

  const scores: FoldScore[] = [];
  const train = async (spec: ModelSpec, seed: number, data: { train: LabeledImages; validation: LabeledImages; test: LabeledImages }, guard = false) => {
    // --patient-weighting: as a run's patientWeighting makes the sites do (every model alike).
    const patients = o.patientWeighting ? patientRowWeights(data.train.groups as readonly string[]) : undefined;
    const initial = buildModel(spec, seed);
    const weights = getWeights(initial);
    initial.dispose();
    const r = await fit({ spec, initial: weights }, data.train, {
      maxEpochs: int('epochs', o.epochs, 1),
      minEpochs: int('min-epochs', o.minEpochs, 1),
      patience: int('patience', o.patience, 1),
      monitor: 'loss',
      validation: data.validation,
      batchSize: int('batch', o.batch, 1),
      learningRate: num('lr', o.lr, 1e-6, 1),
      proximalMu: 0,
      seed,
      ...trainingWeights(data.train, spec, patients),
      ...(patients ? { sampleWeights: patients } : {}),
    });
    const model = buildModel(spec, seed);
    try {
      setWeights(model, r.weights);
      const score = (rows: LabeledImages) => evaluateModel(model, rows, { subtypeParents: spec.subtypeParents }).metrics;
      const m = score(data.test);
      const scored = { balancedAccuracy: m['balancedAccuracy'], auc: Number.isFinite(m['auc']) ? m['auc'] : null, epochs: r.bestEpoch, validationLoss: r.validation?.['loss'] ?? Infinity };
      if (!guard) return { ...scored, guarded: scored };
      // The same model on its no-record path for every patient: kept instead when the validation patients say the records do not help.
      const withRecords = score(data.validation)['loss'];
      const withoutRecords = score(withoutRecord(data.validation, features))['loss'];
      if (withoutRecords >= withRecords) return { ...scored, guarded: scored };
      const n = score(withoutRecord(data.test, features));
      return { ...scored, guarded: { ...scored, balancedAccuracy: n['balancedAccuracy'], auc: Number.isFinite(n['auc']) ? n['auc'] : null } };
    } finally {
      model.dispose();
    }
  };

  for (const seed of seeds) {
    const seedTables = tablesFor(seed);
    for (const f of patientWiseFolds(dataset.images, k, seed)) {
      const foldSeed = mixSeed(seed, 1000 + f.fold);
      const split = patientWiseSplit(f.train, { testFraction: valFraction, seed: foldSeed });
      const plain = { train: slice(decoded, split.train, true), validation: slice(decoded, split.test), test: slice(decoded, f.test) };
      type Scored = { balancedAccuracy: number; auc: number | null; epochs: number; validationLoss: number };
      const record = (table: Table, model: FusionModel, s: Scored) => {
        scores.push({ seed, fold: f.fold, table, model, balancedAccuracy: s.balancedAccuracy, auc: s.auc });
        log(`  seed ${seed} fold ${f.fold + 1}/${k} ${model}${model === 'image' ? '' : ` (${table})`}: balanced ${s.balancedAccuracy.toFixed(3)}, AUC ${s.auc?.toFixed(3) ?? '-'} (epoch ${s.epochs})`);
      };
      const image = await train(imageSpec, foldSeed, plain);
      record('informative', 'image', image);
      for (const t of TABLES) {
        const { table, schema } = seedTables[t];
        const fused = {
          train: withClinical(plain.train, table, schema),
          validation: withClinical(plain.validation, table, schema),
          test: withClinical(plain.test, table, schema),
        };
        const fusedScore = await train(fusionSpec(0), foldSeed, fused, true);
        record(t, 'fused', fusedScore);
        record(t, 'fusedGuarded', fusedScore.guarded);
        // The choice a consortium can make without test patients: keep the record only if the validation loss says so.
        record(t, 'fusedSelected', fusedScore.validationLoss < image.validationLoss ? fusedScore : image);
        record(t, 'fusedGated', await train(fusionSpec(1), foldSeed, fused));
        const tabular = { train: clinicalOnly(fused.train, features), validation: clinicalOnly(fused.validation, features), test: clinicalOnly(fused.test, features) };
        // The tabular model is a model of its own: no modality dropout (there is only one modality).
        record(t, 'tabular', await train(tabularSpec, foldSeed, tabular));
      }
    }
  }

  const summary = summarizeFusion(scores);
  say(`\nBreakHis ${o.data}: ${patients.length} patients; ${k} patient-wise folds x seeds ${seeds.join(', ')}; table seed ${o.tableSeed}; fusion ${JSON.stringify(fusionOptions)}; SYNTHETIC clinical tables (libs/data syntheticClinicalCsv: a demonstration of the mechanism, not a clinical claim)`);
  say('Test stage-1 balanced accuracy (AUC), mean ± sd over folds (%):');
  say(`${'model'.padEnd(12)} ${'informative table'.padStart(30)} ${'uninformative table'.padStart(30)}`);
  for (const m of MODELS) {
    const cell = (t: Table) => `${pct(summary.details[t][m].balancedAccuracy)} (${(100 * summary.details[t][m].auc.mean).toFixed(1)})`;
    say(`${m.padEnd(12)} ${cell('informative').padStart(30)} ${cell('uninformative').padStart(30)}`);
  }
  for (const [m, v] of Object.entries(summary.verdict)) {
    say(`${m}: beats image and tabular alone on the informative table: ${v.beatsBoth ? 'yes' : 'NO'}; does not hurt on the uninformative one (>= image - 1 point): ${v.doesNotHurt ? 'yes' : 'NO'}`);
  }
  say(wallTimeLine((Date.now() - started) / 1000));
  result({ ...summary, folds: k, seeds, patients: patients.length, clinicalWidth: width, backend: backend.name, wallSeconds: (Date.now() - started) / 1000 });
}

runBench<Options>(
  new Command('npm run bench:fusion --')
    .description('Image features fused with a synthetic clinical table (informative / uninformative): image-only vs tabular-only vs fused, patient-wise folds of real BreakHis images')
    .option('--data <dir>', 'BreakHis tree', DEFAULT_SAMPLE)
    .option('--folds <k>', 'patient-wise folds', '5')
    .option('--seeds <list>', 'repeat the folds with each seed (e.g. 1,2,3)', '1,2,3')
    .option('--table-seed <n>', "seed of the synthetic clinical tables, or 'each': the fold seed (a new pair of tables per seed)", 'each')
    .option('--missing-rate <x>', 'share of blank cells in the tables', '0.1')
    .option('--dropped <n>', 'patients without a row in the tables (the no-record path)', '3')
    .option('--epochs <n>', 'maximum epochs', '30')
    .option('--min-epochs <n>', 'epochs before early stopping may act', '10')
    .option('--patience <n>', 'epochs without a better validation loss before stopping', '8')
    .option('--batch <n>', 'batch size (tile rows)', '32')
    .option('--lr <x>', 'Adam learning rate', '0.001')
    .option('--val-fraction <x>', "share of a fold's training patients held out for validation", '0.2')
    .option('--image-dropout <x>', "fusion: chance a training row's image features are dropped (model.options.imageDropout)", '0.5')
    .option('--record-dropout <x>', "fusion: chance a training row's record is dropped (model.options.recordDropout)", '0.5')
    .option('--tabular-units <n>', 'fusion: units of the tabular encoder, 0 = the record read linearly (model.options.tabularUnits)', '16')
    .option('--backend <name>', 'auto, wasm, cpu, tensorflow', 'auto')
    .option('--cache-dir <dir>', 'tile features in DIR/features (default ~/.cache/histofed)')
    .option('--no-cache', 'compute every tile feature')
    .option('--patient-weighting', "every model: each training patient weighs the same (a run's patientWeighting: rows 1 / their patient's count, classes balanced by patients)")
    .option('--json', 'print one JSON line on stdout'),
  main,
);
