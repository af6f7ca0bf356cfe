/**
 * npm run bench:ssl [-- --json | --quick]: does federated self-supervised (contrastive) pretraining
 * on the sites' tiles help the stage-1 (benign vs malignant) classifier when labels are scarce?
 * (issue 19, item 3) On a real BreakHis tree (default: the 213-image sample, read in place).
 *
 * Per patient-wise fold (k folds x seeds): the fold's training patients are dealt to 3 simulated
 * sites (bench/lib foldSites; a site's training and validation patients both count as its tiles —
 * nothing is selected on validation here). Self-supervision uses every training patient's tiles
 * (labelled or not), never a test patient's, and is federated: each round every site runs local
 * NT-Xent steps on its own tiles from the global weights, then FedAvg by image counts (in process).
 * Then at 10 %, 25 % and 100 % of the training patients labelled (stratified by class, at least one
 * patient per class, nested), each arm is evaluated by a linear probe and by fine-tuning, trained
 * centrally on the labelled patients with a fixed recipe (nothing selected on test patients):
 *
 *   imagenet     the default recipe's frozen ImageNet MobileNetV2 tile features (224 px, 384 values);
 *                probe = softmax layer on them; fine-tune = the adapter architecture below from random
 *                initialisation + softmax, trained (the backbone itself is frozen in every arm)
 *   imagenetSsl  + a feature-space adapter (dense 256 -> 128, ReLU) pretrained by federated NT-Xent on
 *                the ImageNet features (positives: two different augmented tiles of one image);
 *                probe = softmax on the adapter's output; fine-tune = adapter (from SSL) + softmax
 *   randomSsl    a small-cnn from random initialisation pretrained by federated NT-Xent on 64 px
 *                native-resolution tiles (two augmented views of a tile); probe = softmax on its pooled
 *                features; fine-tune = the whole CNN + head
 *
 * Reported: stage-1 balanced accuracy (leads) and AUC of the test patients' images, mean ± sample sd
 * over folds; the paired change of each SSL arm over imagenet at 10 % labels.
 */
import { Command } from 'commander';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec } from '@histofed/fl-core';
import { assertHasImages, patientWiseFolds, readBreakHisTree, type BreakHisImage } from '@histofed/data';
import { buildModel, createTrainingPool, mixSeed, parseBackendChoice, selectBackend } from '@histofed/ml';
import { reporter, runBench, wallTimeLine } from '../lib/bench-output';
import { int, ints, num } from '../lib/cli-options';
import { foldSites } from '../lib/fold-sites';
import { cnnEval, cnnFeatures, cnnFineTune, cnnSsl, evalRows, loadCnnTiles, type CnnFineTuneRecipe, type CnnSslRecipe } from './cnn-arm';
import { imagenetFeatures } from './features';
import { adapterRepresentation, featureRows, featureSsl, type FeatureSslRecipe } from './feature-arms';
import { adapterClassifier, keepImages, probeModel, standardizer, trainAndScore, withValues, type HeadRecipe, type RowSet } from './heads';
import { LABEL_FRACTIONS, jsonResult, labelKey, labelledSubsets, summarizeSsl, sslTable, targetLines, type Arm, type Evaluation, type FoldResult, type Score } from './summary';

const ROOT = path.resolve(__dirname, '../..');
const DEFAULT_SAMPLE = path.resolve(ROOT, '../shared/data/breakhis-sample');

interface Options {
  data: string;
  folds: string;
  onlyFolds?: string;
  seeds?: string;
  sites: string;
  tile: string;
  evalTiles?: string;
  crops?: string;
  cnnRounds?: string;
  cnnSteps?: string;
  cnnBatch: string;
  cnnLr: string;
  featureRounds?: string;
  featureSteps: string;
  featureBatch: string;
  featureLr: string;
  tau: string;
  headEpochs: string;
  headSteps: string;
  fineTuneEpochs?: string;
  fineTuneSteps?: string;
  workers: string;
  backend: string;
  cacheDir?: string;
  cache: boolean;
  quick?: boolean;
  json?: boolean;
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

async function main(o: Options): Promise<void> {
  const started = Date.now();
  const { say, result } = reporter(Boolean(o.json));
  const log = (line: string) => process.stderr.write(line + '\n');
  const quick = Boolean(o.quick);
  const k = int('folds', o.folds, 2);
  const seeds = ints('seeds', o.seeds ?? (quick ? '1' : '1,2'), 0);
  const onlyFolds = o.onlyFolds ?? (quick ? '1,2' : undefined);
  const only = onlyFolds === undefined ? null : new Set(ints('only-folds', onlyFolds, 1).map((f) => f - 1));
  const nSites = int('sites', o.sites, 1);
  const workers = int('workers', o.workers, 1);
  const tile = int('tile', o.tile, 16);
  const tau = num('tau', o.tau, 0.01, 10);
  const featureRecipe: FeatureSslRecipe = {
    units: [256, 128],
    inputDropout: 0.1,
    rounds: int('feature-rounds', o.featureRounds ?? (quick ? '5' : '15'), 1),
    localSteps: int('feature-steps', o.featureSteps, 1),
    batchSize: int('feature-batch', o.featureBatch, 2),
    learningRate: num('feature-lr', o.featureLr, 1e-6, 1),
    tau,
  };
  const cnnSpec: ModelSpec = { kind: 'small-cnn', imageSize: tile, numClasses: 2 };
  const cnnRecipe: CnnSslRecipe = {
    spec: cnnSpec,
    rounds: int('cnn-rounds', o.cnnRounds ?? (quick ? '2' : '10'), 1),
    localSteps: int('cnn-steps', o.cnnSteps ?? (quick ? '4' : '10'), 1),
    batchSize: int('cnn-batch', o.cnnBatch, 2),
    learningRate: num('cnn-lr', o.cnnLr, 1e-6, 1),
    tau,
  };
  const head: HeadRecipe = { epochs: int('head-epochs', o.headEpochs, 1), minSteps: int('head-steps', o.headSteps, 0), batchSize: 128, learningRate: 1e-3, dropout: 0.25 };
  const fineTune: CnnFineTuneRecipe = {
    epochs: int('fine-tune-epochs', o.fineTuneEpochs ?? (quick ? '1' : '4'), 1),
    minSteps: int('fine-tune-steps', o.fineTuneSteps ?? (quick ? '20' : '150'), 0),
    batchSize: 32,
    learningRate: 1e-3,
  };
  const evalTiles = int('eval-tiles', o.evalTiles ?? (quick ? '12' : '24'), 1);
  const crops = int('crops', o.crops ?? (quick ? '8' : '12'), 1);

  const dataset = assertHasImages(await readBreakHisTree(path.resolve(o.data)));
  const images = dataset.images;
  log(`data: ${images.length} images, ${new Set(images.map((i) => i.patientId)).size} patients, ${new Set(images.map((i) => i.caseId)).size} cases (${o.data})`);
  const backend = await selectBackend(parseBackendChoice(o.backend));
  log(`backend ${backend.name}, ${workers} training workers (CNN fine-tuning); SSL and the feature heads run on the main thread`);
  const { decoded } = await imagenetFeatures(images, { cacheDir: o.cacheDir, cache: o.cache, log });
  const cnnTiles = await loadCnnTiles(images, { size: tile, evalTiles, crops, log });
  log(
    `recipe: ${k} folds x seeds ${seeds.join(',')}${only ? ` (folds ${[...only].map((f) => f + 1).join(',')} only)` : ''}, ${nSites} sites; NT-Xent tau ${tau}; ` +
      `imagenetSsl adapter ${featureRecipe.units.join('-')} (input dropout ${featureRecipe.inputDropout}): ${featureRecipe.rounds} rounds x ${featureRecipe.localSteps} local steps of ${featureRecipe.batchSize} images, lr ${featureRecipe.learningRate}; ` +
      `randomSsl small-cnn ${tile} px: ${cnnRecipe.rounds} rounds x ${cnnRecipe.localSteps} local steps of ${cnnRecipe.batchSize} pairs, lr ${cnnRecipe.learningRate}; ` +
      `heads: ${head.epochs} epochs (>= ${head.minSteps} steps) of ${head.batchSize}, lr ${head.learningRate}, dropout ${head.dropout}; ` +
      `cnn fine-tune: ${fineTune.epochs} epochs (>= ${fineTune.minSteps} steps) of ${fineTune.batchSize} over ${crops} crops per image, lr ${fineTune.learningRate}; ${evalTiles} evaluation tiles per image`,
  );

  const pool = await createTrainingPool({ workers, backend: parseBackendChoice(o.backend) });
  const evalClassifier = buildModel(cnnSpec, 1);
  const cnn = cnnEval(evalClassifier);
  const folds: FoldResult[] = [];
  const sslLosses: { feature: number[][]; cnn: number[][] } = { feature: [], cnn: [] };
  const randomInitProbe: Record<string, number[]> = {};
  let tensorsAfterFirst: number | null = null;
  try {
    for (const seed of seeds) {
      for (const f of patientWiseFolds(images, k, seed)) {
        if (only !== null && !only.has(f.fold)) continue;
        const tf0 = Date.now();
        const foldSeed = mixSeed(seed, 1000 + f.fold);
        const sites = foldSites(f.train, nSites, 0.2, foldSeed).map((s) => [...s.train, ...s.validation]);
        const tag = `seed ${seed} fold ${f.fold + 1}/${k}`;
        // Labelled patients (cases, the folds' unit) per fraction.
        const caseLabel = new Map<string, number>();
        for (const i of f.train) caseLabel.set(i.caseId, i.labelIndex);
        const subsets = labelledSubsets([...caseLabel].map(([id, label]) => ({ id, label })), LABEL_FRACTIONS, mixSeed(foldSeed, 31));
        const labelledOf = (fr: number) => f.train.filter((i) => subsets.get(fr)?.has(i.caseId));
        log(
          `${tag}: test ${new Set(f.test.map((i) => i.caseId)).size} patients (${f.test.length} images); train ${caseLabel.size} patients (${f.train.length} images) at sites ${sites.map((s) => s.length).join('/')} images; ` +
            `labelled ${LABEL_FRACTIONS.map((fr) => `${labelKey(fr)}: ${subsets.get(fr)?.size} patients, ${labelledOf(fr).length} images`).join('; ')}`,
        );
        const scores: Record<string, Partial<Record<Arm, Record<Evaluation, Score>>>> = {};
        const labelled: Record<string, { patients: number; images: number }> = {};
        for (const fr of LABEL_FRACTIONS) {
          scores[labelKey(fr)] = {};
          labelled[labelKey(fr)] = { patients: subsets.get(fr)?.size ?? 0, images: labelledOf(fr).length };
        }
        const isLabelled = (fr: number, trainImages: readonly BreakHisImage[]) => (i: number) => subsets.get(fr)?.has(trainImages[i].caseId) ?? false;

        // (a), (b): ImageNet tile features, standardized on the fold's training tiles.
        let t = Date.now();
        const rawTrain = featureRows(decoded, f.train, true);
        const std = standardizer(rawTrain);
        const train = withValues(rawTrain, std(rawTrain.x), rawTrain.d);
        const test = featureRows(decoded, f.test, false);
        const testStd = withValues(test, std(test.x), test.d);
        const siteRows = sites.map((s) => {
          const r = featureRows(decoded, s, true);
          return withValues(r, std(r.x), r.d);
        });
        const ssl = await featureSsl(siteRows, featureRecipe, foldSeed);
        sslLosses.feature.push(ssl.losses);
        const repTrain = adapterRepresentation(ssl.encoder, train, featureRecipe);
        const repStd = standardizer(repTrain);
        const rep = withValues(repTrain, repStd(repTrain.x), repTrain.d);
        const repTestRaw = adapterRepresentation(ssl.encoder, testStd, featureRecipe);
        const repTest = withValues(repTestRaw, repStd(repTestRaw.x), repTestRaw.d);
        log(`      feature SSL: ${featureRecipe.rounds} rounds in ${((Date.now() - t) / 1000).toFixed(1)} s; NT-Xent by round ${ssl.losses.map((l) => l.toFixed(2)).join(' ')}`);
        t = Date.now();
        for (const fr of LABEL_FRACTIONS) {
          const key = labelKey(fr);
          const keep = isLabelled(fr, f.train);
          const lab = keepImages(train, keep);
          const labRep = keepImages(rep, keep);
          const s = mixSeed(foldSeed, 50 + Math.round(fr * 100));
          const aProbe = trainAndScore(() => probeModel(lab.d, head.dropout, s), lab, testStd, head, s);
          const aTune = trainAndScore(() => adapterClassifier(lab.d, featureRecipe.units, featureRecipe.inputDropout, head.dropout, s), lab, testStd, head, s);
          const bProbe = trainAndScore(() => probeModel(labRep.d, head.dropout, s), labRep, repTest, head, s);
          const bTune = trainAndScore(() => adapterClassifier(lab.d, featureRecipe.units, featureRecipe.inputDropout, head.dropout, s, ssl.encoder), lab, testStd, head, s);
          scores[key].imagenet = { probe: aProbe, fineTune: aTune };
          scores[key].imagenetSsl = { probe: bProbe, fineTune: bTune };
        }
        log(`      feature heads: ${((Date.now() - t) / 1000).toFixed(1)} s`);

        // (c): small-cnn from random init + federated SSL on native-resolution tiles.
        const c = await cnnSsl(cnnTiles, sites, cnnRecipe, foldSeed, log);
        sslLosses.cnn.push(c.losses);
        t = Date.now();
        const cTrainPix = evalRows(cnnTiles, f.train);
        const cTestPix = evalRows(cnnTiles, f.test);
        const featStd = (w: typeof c.classifier): { train: RowSet; test: RowSet } => {
          const tr = cnnFeatures(cnn, w, cTrainPix, tile);
          const te = cnnFeatures(cnn, w, cTestPix, tile);
          const st = standardizer(tr);
          return { train: withValues(tr, st(tr.x), tr.d), test: withValues(te, st(te.x), te.d) };
        };
        const sslFeat = featStd(c.classifier);
        const initFeat = featStd(c.initial);
        for (const fr of LABEL_FRACTIONS) {
          const key = labelKey(fr);
          const keep = isLabelled(fr, f.train);
          const s = mixSeed(foldSeed, 70 + Math.round(fr * 100));
          const cProbe = trainAndScore(() => probeModel(sslFeat.train.d, head.dropout, s), keepImages(sslFeat.train, keep), sslFeat.test, head, s);
          const rProbe = trainAndScore(() => probeModel(initFeat.train.d, head.dropout, s), keepImages(initFeat.train, keep), initFeat.test, head, s);
          (randomInitProbe[key] ??= []).push(rProbe.balancedAccuracy);
          const cTune = await cnnFineTune(cnn, pool, cnnSpec, cnnTiles, c.classifier, labelledOf(fr), cTestPix, fineTune, s);
          scores[key].randomSsl = { probe: cProbe, fineTune: cTune };
        }
        log(`      cnn probe + fine-tune: ${((Date.now() - t) / 1000).toFixed(1)} s`);

        const row = (key: string) =>
          (['imagenet', 'imagenetSsl', 'randomSsl'] as const)
            .map((a) => `${a} ${scores[key][a]?.probe.balancedAccuracy.toFixed(2)}/${scores[key][a]?.fineTune.balancedAccuracy.toFixed(2)}`)
            .join(', ');
        for (const fr of LABEL_FRACTIONS) log(`  ${tag} labels ${labelKey(fr)}: balanced accuracy probe/fine-tune: ${row(labelKey(fr))}`);
        folds.push({ seed, fold: f.fold + 1, labelled, scores });
        const tensors = tf.memory().numTensors;
        tensorsAfterFirst ??= tensors;
        log(`  ${tag}: ${((Date.now() - tf0) / 1000).toFixed(0)} s; tf tensors ${tensors} (after the first fold ${tensorsAfterFirst}); elapsed ${((Date.now() - started) / 1000).toFixed(0)} s`);
      }
    }
  } finally {
    await pool.close();
    evalClassifier.dispose();
  }

  const wallSeconds = (Date.now() - started) / 1000;
  const summary = summarizeSsl(folds);
  const lossLine = (name: string, runs: number[][]) => {
    if (runs.length === 0) return `${name}: -`;
    const rounds = runs[0].length;
    return `${name} NT-Xent (mean over folds): round 1 ${mean(runs.map((r) => r[0])).toFixed(3)} -> round ${rounds} ${mean(runs.map((r) => r[rounds - 1])).toFixed(3)}`;
  };
  say(`bench:ssl — stage-1 balanced accuracy % mean ± sd (AUC % mean) over ${summary.folds} patient-wise folds (${k} folds x seeds ${seeds.join(',')}${only ? `, folds ${[...only].map((x) => x + 1).join(',')} only` : ''})`);
  for (const line of sslTable(summary)) say(line);
  say(`chance: 50 % (balanced accuracy); reference: linear probe on the random-init small-cnn's pooled features: ${LABEL_FRACTIONS.map((fr) => `${labelKey(fr)} ${(100 * mean(randomInitProbe[labelKey(fr)] ?? [])).toFixed(1)} %`).join(', ')}`);
  for (const line of targetLines(summary)) say(line);
  say(`${lossLine('imagenetSsl adapter', sslLosses.feature)}; ${lossLine('randomSsl small-cnn', sslLosses.cnn)} (chance level: ln(2 x batch - 1))`);
  say(wallTimeLine(wallSeconds));
  result(jsonResult(summary, wallSeconds));
}

runBench<Options>(
  new Command('npm run bench:ssl --')
    .description('Federated self-supervised (NT-Xent) pretraining vs ImageNet features at 10/25/100 % labels, linear probe and fine-tuning, on patient-wise folds of real BreakHis images')
    .option('--data <dir>', 'BreakHis tree (read in place)', DEFAULT_SAMPLE)
    .option('--folds <k>', 'patient-wise folds', '5')
    .option('--only-folds <list>', 'run only these 1-based folds, e.g. 1,2 (quick: 1,2)')
    .option('--seeds <list>', 'repeat the k folds with each of these seeds (default 1,2; quick: 1)')
    .option('--sites <n>', 'simulated sites per fold', '3')
    .option('--tile <px>', 'randomSsl: tile size at native resolution', '64')
    .option('--eval-tiles <n>', 'randomSsl: evaluation tiles per image, evenly spread over the grid (default 24; quick: 12)')
    .option('--crops <n>', 'randomSsl: augmented training crops per image for fine-tuning (default 12; quick: 8)')
    .option('--cnn-rounds <n>', 'randomSsl: federated SSL rounds (default 10; quick: 2)')
    .option('--cnn-steps <n>', 'randomSsl: local NT-Xent steps per site and round (default 10; quick: 4)')
    .option('--cnn-batch <n>', 'randomSsl: pairs per NT-Xent batch', '32')
    .option('--cnn-lr <x>', 'randomSsl: Adam learning rate of SSL', '0.001')
    .option('--feature-rounds <n>', 'imagenetSsl: federated SSL rounds (default 15; quick: 5)')
    .option('--feature-steps <n>', 'imagenetSsl: local NT-Xent steps per site and round', '20')
    .option('--feature-batch <n>', 'imagenetSsl: images per NT-Xent batch', '64')
    .option('--feature-lr <x>', 'imagenetSsl: Adam learning rate of SSL', '0.001')
    .option('--tau <x>', 'NT-Xent temperature', '0.5')
    .option('--head-epochs <n>', 'probe and feature fine-tuning: epochs (batches of 128 tile rows)', '15')
    .option('--head-steps <n>', 'probe and feature fine-tuning: at least this many steps', '200')
    .option('--fine-tune-epochs <n>', 'randomSsl fine-tuning: epochs (default 4; quick: 1)')
    .option('--fine-tune-steps <n>', 'randomSsl fine-tuning: at least this many steps (default 150; quick: 20)')
    .option('--workers <n>', 'training worker threads (CNN fine-tuning)', '2')
    .option('--backend <name>', 'auto, wasm, cpu, tensorflow', 'auto')
    .option('--cache-dir <dir>', 'feature cache root (default ~/.cache/histofed)')
    .option('--no-cache', 'compute the tile features without the on-disk cache')
    .option('--quick', 'smoke run (a few minutes): seed 1, folds 1-2, 2 CNN SSL rounds, 5 adapter rounds, short fine-tuning')
    .option('--json', 'print one JSON line on stdout'),
  main,
);
