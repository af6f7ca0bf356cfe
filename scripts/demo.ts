/**
 * `npm run demo`: a coordinator on embedded PostgreSQL and N site clients as separate processes
 * on localhost, R federated rounds on synthetic BreakHis-like data (or a real tree with --data),
 * then a report of global, per-site and ensemble metrics.
 */
import { Command } from 'commander';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BREAKHIS_SUBTYPE_PARENTS, DEFAULT_RUN_MODEL, HistoFedError, Metrics, type ClinicalSchema } from '@histofed/fl-core';
import { assertHasImages, generateSyntheticBreakHis, readBreakHisTree, syntheticClinicalCsv } from '@histofed/data';
import { startFederation } from './lib/federation-harness';
import { LogLine } from './lib/processes';

interface DemoOptions {
  sites: string;
  rounds: string;
  data?: string;
  reportJson?: string;
  imageSize?: string;
  epochs?: string;
  seed: string;
  backend?: string;
  partition: string;
  alpha?: string;
  stainNormalization: string;
  augment?: boolean;
  keep?: boolean;
  model: string;
  singleStage?: boolean;
  secureAggregation?: boolean;
  trainFrom?: string;
  clinical?: string;
}

interface RoundEntry {
  round: number;
  participants: string[];
  global: Metrics | null;
  sitesValidation: Metrics | null;
  perSite: Record<string, Metrics>;
  rejected: { siteId: string; reason: string }[];
}
interface MetricsResponse {
  status: string;
  backends: { coordinator: string | null; sites: Record<string, string> };
  statusReason: string | null;
  sites: string[];
  rounds: RoundEntry[];
  final: {
    global: Metrics | null;
    perSite: Record<string, Metrics | null>;
    ensemble: Metrics | null;
    ensembleMembers: string[];
    calibration?: { global: { temperature: { stage1: number } | null; eceBefore: number | null; eceAfter: number | null } };
    review?: { targetReviewRate: number; global: { threshold: number; reviewRate: number; accuracyAll: number; accuracyUnflagged: number | null } | null };
  } | null;
}

const fmt = (m: Metrics | null | undefined, key = 'accuracy') => (m && key in m ? m[key].toFixed(3) : '  -  ');
const say = (text: string) => process.stdout.write(text + '\n');

/** When each round started (coordinator log time), for the round durations the demo prints. */
const roundStarted = new Map<number, number>();
const roundSeconds = new Map<number, number>();
let updateBytes: number | null = null;

function progressLine(source: string, l: LogLine): string | null {
  switch (l.msg) {
    case 'initial global model':
      updateBytes = Number(l.parameters) * 4;
      return `[coordinator] initial global model: ${Number(l.parameters).toLocaleString('en')} parameters federate (${(updateBytes / 1024).toFixed(1)} KiB of float32 per update)`;
    case 'round started':
      roundStarted.set(Number(l.round), Date.parse(String(l.time)));
      return `[coordinator] round ${l.round}/${l.rounds} started with ${(l.participants as string[]).join(', ')}`;
    case 'round completed': {
      const began = roundStarted.get(Number(l.round));
      const seconds = began === undefined ? null : (Date.parse(String(l.time)) - began) / 1000;
      if (seconds !== null) roundSeconds.set(Number(l.round), seconds);
      return (
        `[coordinator] round ${l.round}/${l.rounds} aggregated from ${(l.contributors as string[]).length} sites` +
        `${seconds === null ? '' : ` in ${seconds.toFixed(1)} s`}; central balanced accuracy ${fmt(l.centralMetrics as Metrics, 'balancedAccuracy')}`
      );
    }
    case 'tile features':
      return l.images === l.total ? `[${source}] ${l.split} tile features ready: ${l.rows} tiles of ${l.total} images (${l.cached} images from the cache)` : null;
    case 'contribution rejected':
      return `[coordinator] rejected an update from ${l.siteId}: ${l.reason}`;
    case 'secure aggregation completed':
      return `[coordinator] round ${l.round}: the sum of ${(l.survivors as string[]).length} masked updates unmasked (k = ${l.neighbours}, t = ${l.threshold}, dropped: ${(l.dropped as string[]).join(', ') || 'none'})`;
    case 'personalization started':
      return `[coordinator] personalization: each site fine-tunes the final global model`;
    case 'training progress':
      return l.batch === l.batches ? `[${source}] round ${l.round} epoch ${l.epoch}/${l.epochs} loss ${Number(l.loss).toFixed(4)}` : null;
    case 'update accepted':
      return `[${source}] sealed update for round ${l.round} (${l.kind}) accepted`;
    default:
      return l.level === 'error' ? `[${source}] ERROR ${l.msg} ${JSON.stringify(l)}` : null;
  }
}

async function demo(opts: DemoOptions): Promise<void> {
  const sites = Number(opts.sites);
  const rounds = Number(opts.rounds);
  const backbone = opts.model === 'backbone-head';
  // Backbone models read tiles: 224 px at native resolution on real BreakHis images; the synthetic
  // images are a fifth of BreakHis's size, so their tiles are 96 px.
  const imageSize = Number(opts.imageSize ?? (backbone ? (opts.data ? 224 : 96) : 32));
  const epochs = Number(opts.epochs ?? (backbone ? 5 : 6));
  const seed = Number(opts.seed);
  for (const [name, v, min] of [['--sites', sites, 1], ['--rounds', rounds, 1], ['--image-size', imageSize, 16], ['--epochs', epochs, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw new HistoFedError('USAGE', `${name} must be an integer >= ${min}, got "${v}"`);
  }
  if (opts.secureAggregation && sites < 3) throw new HistoFedError('USAGE', `--secure-aggregation needs --sites >= 3, got ${sites}`);
  if (opts.trainFrom && !backbone) throw new HistoFedError('USAGE', '--train-from applies to --model backbone-head');
  if (opts.clinical !== undefined && !['informative', 'uninformative'].includes(opts.clinical)) {
    throw new HistoFedError('USAGE', `--clinical must be informative or uninformative, got "${opts.clinical}"`);
  }
  if (opts.clinical && (!backbone || opts.trainFrom)) throw new HistoFedError('USAGE', '--clinical fuses a record with a frozen backbone\'s tile features: --model backbone-head without --train-from');
  const workDir = mkdtempSync(join(tmpdir(), 'histofed-demo-'));
  let dataDir: string;
  if (opts.data) {
    dataDir = resolve(opts.data);
    const ds = assertHasImages(await readBreakHisTree(dataDir));
    say(`data: ${ds.images.length} BreakHis images of ${new Set(ds.images.map((i) => i.patientId)).size} patients in ${dataDir} (${ds.problems.length} unusable files)`);
  } else {
    dataDir = join(workDir, 'synthetic');
    const made = await generateSyntheticBreakHis(dataDir, { seed, patientsPerSubtype: Math.max(3, sites + 1), imagesPerPatient: 16 });
    say(`data: synthetic BreakHis-like tree, ${made.images} images of ${made.patients} patients (${dataDir})`);
  }
  // Issue 19: a SYNTHETIC clinical table (libs/data syntheticClinicalCsv: a demonstration of the
  // mechanism, not a clinical claim) for every patient of the tree; each site reads its own
  // patients' rows from it, the coordinator its test patients'.
  let clinical: { csv: string; schema: ClinicalSchema } | undefined;
  if (opts.clinical) {
    const images = (await readBreakHisTree(dataDir)).images;
    const patients = [...new Map(images.map((i) => [i.patientId, i.labelIndex as 0 | 1])).entries()].map(([patientId, label]) => ({ patientId, label }));
    const table = syntheticClinicalCsv(patients, { informative: opts.clinical === 'informative', seed, missingRate: 0.1, droppedPatients: Math.min(2, patients.length) });
    clinical = { csv: join(workDir, 'clinical.csv'), schema: table.schema };
    writeFileSync(clinical.csv, table.csv);
    say(`clinical: a SYNTHETIC ${opts.clinical} table (${table.schema.columns.map((c) => c.name).join(', ')}; 10 % blank cells, 2 patients without a row): a demonstration of the mechanism, not a clinical claim (${clinical.csv})`);
  }
  say(`starting a coordinator (embedded PostgreSQL) and ${sites} site clients; logs in ${join(workDir, 'logs')}`);
  const fed = await startFederation({
    dataDir,
    workDir,
    sites,
    seed,
    backend: opts.backend,
    partition: opts.partition,
    alpha: opts.alpha === undefined ? undefined : Number(opts.alpha),
    ...(clinical ? { clinicalCsvs: Array.from({ length: sites }, () => clinical.csv), coordinatorEnv: { HISTOFED_TEST_CLINICAL: clinical.csv } } : {}),
  });
  // Issue 17: the administrator's dashboard, live while the demo runs (the token is this demo's own, random).
  say(`dashboard: ${fed.url}/#token=${fed.token}`);
  try {
    fed.coordinator.onLine((l) => {
      const p = progressLine('coordinator', l);
      if (p) say(p);
    });
    fed.sites.forEach((s) =>
      s.onLine((l) => {
        const p = progressLine(s.name, l);
        if (p) say(p);
      }),
    );
    const backend = (await fed.coordinator.waitFor((l) => l.msg === 'ml backend selected', 1000, 'backend')).backend as string;
    const run = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      name: 'demo',
      rounds,
      minSites: sites,
      maxSites: sites,
      model: {
        ...(backbone ? DEFAULT_RUN_MODEL : {}),
        ...(backbone && opts.trainFrom ? { backbone: { ...DEFAULT_RUN_MODEL.backbone, trainFrom: opts.trainFrom } } : {}),
        kind: opts.model,
        imageSize,
        numClasses: 2,
        ...(opts.singleStage ? {} : { subtypeParents: [...BREAKHIS_SUBTYPE_PARENTS] }),
        ...(clinical ? { clinical: clinical.schema } : {}),
      },
      classWeighting: 'balanced',
      localEpochs: epochs,
      // Heads on tile features see ~20 rows per image: larger batches.
      batchSize: backbone ? 32 : 8,
      learningRate: backbone ? 0.001 : 0.002,
      proximalMu: 0.01,
      // Secure aggregation keeps every per-site model from the coordinator: no personalized
      // models, no per-site ensemble then (the run config refuses the combination).
      personalizeEpochs: opts.secureAggregation ? 0 : 1,
      ...(opts.secureAggregation ? { secureAggregation: {} } : {}),
      roundTimeoutSeconds: 900,
      waitForSitesSeconds: 120,
      seed,
      stainNormalization: opts.stainNormalization,
      // Tiles' training views are augmented by default (their features are computed once).
      augment: opts.augment ?? backbone,
    });
    await fed.admin.request('POST', `/api/runs/${run.id}/start`);
    say(
      `run ${run.id} started: ${rounds} rounds, ${sites} sites (${opts.partition} partition), ${opts.model}${opts.singleStage ? '' : ' two-stage'} ` +
        `${backbone ? `on ImageNet MobileNetV2 features of ${imageSize} px tiles (${opts.trainFrom ? `fine-tuned from ${opts.trainFrom}` : 'frozen backbone'})` : `at ${imageSize}x${imageSize} px`}, backend ${backend}${opts.secureAggregation ? ', secure aggregation' : ''}`,
    );
    const result = await fed.admin.poll(
      async () => {
        const m = await fed.admin.request<MetricsResponse>('GET', `/api/runs/${run.id}/metrics`);
        return m.status === 'completed' || m.status === 'failed' ? m : undefined;
      },
      60 * 60 * 1000,
      'the run to finish',
      1000,
    );
    if (result.status !== 'completed') throw new HistoFedError('RUN_FAILED', `run failed: ${result.statusReason}`);

    say('\n== HistoFed demo report ==');
    say(`sites: ${fed.siteIds.join(', ')}   backends: coordinator ${backend}, ${Object.entries(result.backends.sites).map(([s, b]) => `${s} ${b}`).join(', ')}`);
    say('stage 1 = benign vs malignant, stage 2 = subtype (cascade); patient = patient-level recognition rate');
    say('round  balanced acc  central acc  patient acc  AUC    stage-2 acc  stage-2 F1  sites val acc  seconds  participants');
    for (const r of result.rounds) {
      const secs = roundSeconds.get(r.round);
      say(
        `${String(r.round).padStart(5)}  ${fmt(r.global, 'balancedAccuracy').padStart(12)}  ${fmt(r.global).padStart(11)}  ${fmt(r.global, 'patientAccuracy').padStart(11)}  ${fmt(r.global, 'auc')}  ${fmt(r.global, 'stage2Accuracy').padStart(11)}  ${fmt(r.global, 'stage2MacroF1').padStart(10)}  ${fmt(r.sitesValidation, 'valAccuracy').padStart(13)}  ${(secs === undefined ? '-' : secs.toFixed(1)).padStart(7)}  ${r.participants.join(',')}`,
      );
    }
    if (updateBytes !== null) say(`each site's update: ${(updateBytes / 1024).toFixed(1)} KiB of weights per round (sealed, plus a small header)`);
    const f = result.final!;
    const line = (m: Metrics | null | undefined) =>
      `balanced ${fmt(m, 'balancedAccuracy')}  accuracy ${fmt(m)}  patient ${fmt(m, 'patientAccuracy')}  diagnosis ${fmt(m, 'patientDiagnosisAccuracy')}  AUC ${fmt(m, 'auc')}  stage-2 acc ${fmt(m, 'stage2Accuracy')}  F1 ${fmt(m, 'stage2MacroF1')}`;
    say('\nfinal (central test split, patient-wise held out):');
    say(`  global model     ${line(f.global)}`);
    for (const [site, m] of Object.entries(f.perSite)) say(`  ${site.padEnd(16)} ${line(m)}  (personalized)`);
    say(`  ensemble         ${line(f.ensemble)}  (${f.ensembleMembers.join(' + ')})`);
    const cal = f.calibration?.global;
    const num = (x: number | null | undefined) => (typeof x === 'number' ? x.toFixed(3) : '-');
    if (cal?.temperature) say(`  calibration      temperature ${cal.temperature.stage1} fitted with the sites; central ECE ${num(cal.eceBefore)} -> ${num(cal.eceAfter)}`);
    const rule = f.review?.global;
    if (rule) {
      say(`  review rule      entropy >= ${rule.threshold.toFixed(2)} flags ${(100 * rule.reviewRate).toFixed(0)} % of validation images (target ${(100 * f.review!.targetReviewRate).toFixed(0)} %); accuracy ${num(rule.accuracyAll)} all, ${num(rule.accuracyUnflagged)} unflagged`);
    }
    if (opts.reportJson) {
      const report = {
        runId: run.id,
        backend,
        backends: result.backends,
        data: opts.data ? resolve(opts.data) : 'synthetic',
        partition: opts.partition,
        sites: fed.siteIds,
        model: { kind: opts.model, imageSize, parameters: updateBytes === null ? null : updateBytes / 4 },
        rounds: result.rounds.map((r) => ({
          round: r.round,
          seconds: roundSeconds.get(r.round) ?? null,
          participants: r.participants,
          global: r.global,
          sitesValidation: r.sitesValidation,
          perSite: r.perSite,
          rejected: r.rejected,
        })),
        final: f,
      };
      writeFileSync(resolve(opts.reportJson), JSON.stringify(report, null, 2) + '\n');
      say(`\nreport written to ${resolve(opts.reportJson)}`);
    }
  } finally {
    await fed.stop();
    if (!opts.keep) rmSync(workDir, { recursive: true, force: true });
    else say(`work directory kept: ${workDir}`);
  }
}

const program = new Command('npm run demo --')
  .description('Federated run on localhost: coordinator + N site clients as separate processes, then a report.')
  .option('--sites <n>', 'number of simulated hospitals', '3')
  .option('--rounds <n>', 'federated rounds', '3')
  .option('--data <dir>', 'a real BreakHis tree instead of synthetic data')
  .option('--report-json <file>', 'write the report as JSON')
  .option('--image-size <px>', 'model input size: tile size of backbone models (224 on real images, 96 on the synthetic ones), whole-image size of the CNNs (32)')
  .option('--epochs <n>', 'local epochs per round (backbone 5, CNNs 6)')
  .option('--seed <n>', 'seed of data generation, partition and training', '1')
  .option('--backend <name>', 'TensorFlow.js backend for all processes (auto|wasm|cpu|tensorflow|tensorflow-gpu)')
  .option('--partition <kind>', 'how the hospitals differ: iid, label-skew, magnification, stain', 'iid')
  .option('--alpha <a>', 'Dirichlet concentration for --partition label-skew (smaller = more skewed)')
  .option('--stain-normalization <method>', 'none or macenko (applied by every site and the central evaluation)', 'none')
  .option('--augment', 'sites augment their training data: tiles\' training views (the default for backbone-head), or whole images every round')
  .option('--no-augment', 'no augmentation (the default for the compact CNNs)')
  .option('--keep', 'keep the work directory (logs, databases, site outboxes)')
  .option(
    '--model <kind>',
    'backbone-head (heads on frozen ImageNet MobileNetV2 features of native-resolution tiles), or a compact CNN on whole images: se-cnn (squeeze-and-excitation), attention-cnn (SE + spatial attention), small-cnn',
    'backbone-head',
  )
  .option('--train-from <layer>', 'backbone-head: fine-tune the backbone from this layer (e.g. block_9_expand) instead of freezing it')
  .option('--single-stage', 'benign vs malignant only (no subtype head, no stage-2 metrics)')
  .option('--secure-aggregation', 'SecAgg+: the coordinator only sees the sum of the updates (needs >= 3 sites; no per-site ensemble)')
  .option('--clinical <table>', 'fuse a SYNTHETIC clinical table with the images (backbone-head): informative (related to the label as documented) or uninformative')
  .action(async (opts: DemoOptions) => demo(opts));

program.parseAsync(process.argv).catch((e: unknown) => {
  const message = e instanceof HistoFedError ? e.message : ((e as Error).stack ?? String(e));
  process.stderr.write(`demo: ${message}\n`);
  process.exit(1);
});
