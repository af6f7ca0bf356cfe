/**
 * The end-to-end path on real BreakHis images (../shared/data/breakhis-sample, read in place) with
 * the default model family — heads on the frozen ImageNet MobileNetV2's tile features: a
 * coordinator and two site clients as processes, each site computing its tiles' features on its
 * own worker threads, one round plus personalization, central evaluation on the patients held out
 * of both sites, and `evaluate` of the saved models (one tfjs tile classifier each). Then one round
 * of each bag model (attention-MIL, the transformer over tiles: issue 18) on the same tiles, whose
 * features the sites read from their caches, and `predict --json --heatmap` with the attention
 * model: each image's top tiles and its heat map. Then one round of the fusion model (issue 19) with
 * a SYNTHETIC clinical table at site-1 and none at site-2: the sites' updates carry weights, counts
 * and metrics only (checked on the plaintext bytes each site sealed), and `predict --clinical` reads
 * the patients' records.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DEFAULT_RUN_MODEL, decodeWeights, type ClinicalSchema, type ModelSpec } from '@histofed/fl-core';
import { readBreakHisTree, simulateFederation, syntheticClinicalCsv } from '@histofed/data';
import { decodeUpdateEnvelope } from '@histofed/protocol';
import sharp from 'sharp';
import { predictionReportSchema } from '@histofed/inference';
import { COORDINATOR_BIN, Federation, REPO_ROOT, SITE_BIN, startFederation } from '@histofed/harness';

const SAMPLE = join(REPO_ROOT, '..', 'shared', 'data', 'breakhis-sample');

type RunReport = {
  status: string;
  statusReason: string | null;
  rounds: { round: number; participants: string[]; global: Record<string, number>; perSite: Record<string, { samples: number }> }[];
  final: { perSite: Record<string, unknown>; ensemble: Record<string, number>; modelsDir: string };
};

describe('a federated round on the real BreakHis sample', () => {
  let work: string;
  let fed: Federation;
  let heldOut: string;
  let heldOutCount: number;
  let clinicalCsv: string;
  let clinicalSchema: ClinicalSchema;
  let clinicalPatients: string[];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-real-'));
    // Site-1's clinical table: synthetic (a documented relation to the label, libs/data
    // syntheticClinicalCsv), some cells blank, two patients without a row. Site-2 has none.
    const all = (await readBreakHisTree(SAMPLE)).images;
    const patients = [...new Map(all.map((i) => [i.patientId, i.labelIndex as 0 | 1])).entries()].map(([patientId, label]) => ({ patientId, label }));
    const table = syntheticClinicalCsv(patients, { informative: true, seed: 5, missingRate: 0.1, droppedPatients: 2 });
    clinicalCsv = join(work, 'clinical.csv');
    writeFileSync(clinicalCsv, table.csv);
    clinicalSchema = table.schema;
    clinicalPatients = table.csv.trim().split('\n').slice(1).map((l) => l.split(',')[0]);
    fed = await startFederation({ dataDir: SAMPLE, workDir: work, sites: 2, seed: 5, auditPlaintext: true, clinicalCsvs: [clinicalCsv, undefined] });
    // The patients held out of both sites (the coordinator's evaluation set), as a tree of links.
    const sim = simulateFederation((await readBreakHisTree(SAMPLE)).images, { sites: 2, seed: 5, testFraction: 0.25 });
    heldOut = join(work, 'held-out');
    heldOutCount = sim.test.length;
    for (const img of sim.test) {
      const target = join(heldOut, img.relativePath);
      mkdirSync(dirname(target), { recursive: true });
      symlinkSync(img.path, target);
    }
  });
  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('trains on each site\'s own patients and evaluates on the held-out ones', async () => {
    const { id, config } = await fed.admin.request<{ id: string; config: { model: ModelSpec } }>('POST', '/api/runs', {
      rounds: 1,
      minSites: 2,
      // The default recipe's model at half resolution (4 tiles of 224 px per image, 2 training views), to keep the test short.
      model: { ...DEFAULT_RUN_MODEL, tiles: { scale: 0.5, views: 2 } },
      batchSize: 32,
      personalizeEpochs: 1,
      seed: 5,
    });
    // A backbone that is not the coordinator's copy, or a cut it does not have, is refused when the run is created.
    await expect(
      fed.admin.request('POST', '/api/runs', { model: { ...DEFAULT_RUN_MODEL, backbone: { ...DEFAULT_RUN_MODEL.backbone, sha256: '0'.repeat(64) } } }),
    ).rejects.toThrow(/400.*SHA-256/);
    await expect(fed.admin.request('POST', '/api/runs', { model: { ...DEFAULT_RUN_MODEL, backbone: { ...DEFAULT_RUN_MODEL.backbone, cut: 'block_99' } } })).rejects.toThrow(
      /400.*model.backbone.cut/,
    );
    // The run pins the backbone: its content hash and feature width, which every site checks.
    expect(config.model.backbone).toEqual(expect.objectContaining({ name: 'mobilenet-v2-imagenet', features: 384, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) }));
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const report = await finished(id);
    expect(report.statusReason).toBeNull();
    expect(report.status).toBe('completed');

    // What each site reported training on is its own partition's train split, patient-wise.
    const images = (await readBreakHisTree(SAMPLE)).images;
    const sim = simulateFederation(images, { sites: 2, seed: 5, testFraction: 0.25 });
    const [round] = report.rounds;
    expect(round.participants).toEqual(['site-1', 'site-2']);
    sim.sites.forEach((site, i) => {
      const samples = round.perSite[`site-${i + 1}`].samples;
      expect(samples).toBeGreaterThan(0);
      expect(samples).toBeLessThan(site.length);
    });
    // Central metrics come from the held-out patients, and cover patient-level accuracy.
    expect(round.global.samples).toBe(sim.test.length);
    expect(round.global.patientAccuracy).toBeGreaterThanOrEqual(0);
    expect(report.final.ensemble.samples).toBe(sim.test.length);
    expect(Object.keys(report.final.perSite).sort()).toEqual(['site-1', 'site-2']);
    // Two-stage: the central evaluation reports the subtype (stage 2) too.
    expect(round.global).toHaveProperty('stage2Accuracy');
    expect(round.global).toHaveProperty('stage2MacroF1');

    // The run's models are saved: the ensemble directory evaluates with the same code, and
    // restricted to the held-out patients it reproduces the coordinator's own ensemble figures.
    const e = spawnSync(process.execPath, [COORDINATOR_BIN, 'evaluate', '--model', report.final.modelsDir, '--data', heldOut, '--json'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(e.stderr).not.toMatch(/error/i);
    expect(e.status).toBe(0);
    const evaluated = JSON.parse(e.stdout);
    expect(evaluated.kind).toBe('ensemble');
    expect(evaluated.members).toEqual(['global', 'site-1', 'site-2']);
    expect(evaluated.images).toBe(sim.test.length);
    expect(evaluated.stage1.imageAccuracy).toBeCloseTo(report.final.ensemble.accuracy, 6);
    expect(evaluated.stage1.auc).toBeCloseTo(report.final.ensemble.auc, 4);
    expect(evaluated.stage2.imageAccuracy).toBeCloseTo(report.final.ensemble.stage2Accuracy, 6);
    const manifest = JSON.parse(readFileSync(join(report.final.modelsDir, 'global', 'histofed-model.json'), 'utf8'));
    expect(manifest.preprocessing).toEqual(expect.objectContaining({ resize: 'tiles', tiles: { size: 224, scale: 0.5, grid: 'cover' } }));
    expect(manifest.spec.backbone.sha256).toBe(config.model.backbone?.sha256);
  });

  async function finished(id: string): Promise<RunReport> {
    return fed.admin.poll(
      async () => {
        const m = await fed.admin.request<RunReport>('GET', `/api/runs/${id}/metrics`);
        return m.status === 'completed' || m.status === 'failed' ? m : undefined;
      },
      8 * 60_000,
      `run ${id}`,
    );
  }

  it.each(['attention-mil', 'transformer-mil'])('federates the %s head on the same tiles and evaluates it on the held-out patients', async (kind) => {
    const { id, config } = await fed.admin.request<{ id: string; config: { model: ModelSpec } }>('POST', '/api/runs', {
      rounds: 1,
      minSites: 2,
      // The same backbone and tiles as the first run: the sites read the features from their caches.
      model: { ...DEFAULT_RUN_MODEL, kind, tiles: { scale: 0.5, views: 2 }, options: { dropout: 0.25, bagTiles: 8 } },
      batchSize: 8,
      seed: 5,
    });
    expect(config.model.kind).toBe(kind);
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const report = await finished(id);
    expect(report.statusReason).toBeNull();
    expect(report.status).toBe('completed');
    const [round] = report.rounds;
    expect(round.participants).toEqual(['site-1', 'site-2']);
    // A bag is an image: the sites trained on images, the coordinator evaluated every held-out image.
    expect(round.global.samples).toBe(heldOutCount);
    expect(round.global.balancedAccuracy).toBeGreaterThanOrEqual(0);
    expect(round.global).toHaveProperty('stage2MacroF1');
    const manifest = JSON.parse(readFileSync(join(report.final.modelsDir, 'global', 'histofed-model.json'), 'utf8'));
    expect(manifest.spec).toEqual(expect.objectContaining({ kind, backbone: expect.objectContaining({ sha256: config.model.backbone?.sha256 }) }));
    if (kind !== 'attention-mil') return;

    // predict: the top tiles of each image (weights of its 4 tiles summing to 1) and a heat map of its size.
    const files = (await readBreakHisTree(heldOut)).images.slice(0, 2).map((i) => i.path);
    const maps = join(work, 'heatmaps');
    const p = spawnSync(process.execPath, [SITE_BIN, 'predict', '--model', join(report.final.modelsDir, 'global'), '--json', '--heatmap', maps, ...files], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(p.stderr).not.toMatch(/histofed-site:/);
    expect(p.status).toBe(0);
    const predicted = predictionReportSchema.parse(JSON.parse(p.stdout));
    expect(predicted.images).toHaveLength(2);
    for (const im of predicted.images) {
      const top = im.topTiles ?? [];
      expect(top).toHaveLength(4); // 350 x 230 px after scaling: a 2 x 2 grid of 224 px tiles
      expect(top.reduce((n, t) => n + t.weight, 0)).toBeCloseTo(1, 4);
      expect(top.map((t) => t.weight)).toEqual([...top.map((t) => t.weight)].sort((a, b) => b - a));
      for (const t of top) expect(t.x + t.width <= 700 && t.y + t.height <= 460 && t.width === 448).toBe(true);
      expect(im.uncertainty.tiles).toBe(4);
      const file = join(REPO_ROOT, im.heatmap as string);
      expect(file.startsWith(maps)).toBe(true);
      expect(existsSync(file)).toBe(true);
      const meta = await sharp(file).metadata();
      expect([meta.width, meta.height]).toEqual([700, 460]);
    }
  });

  it('fuses a clinical table (issue 19): only weights, counts and metrics leave the site that has one, and predict reads the records', async () => {
    const model = { ...DEFAULT_RUN_MODEL, tiles: { scale: 0.5, views: 2 }, clinical: clinicalSchema };
    // A declaration the fusion heads cannot read is refused when the run is created, naming the field.
    await expect(fed.admin.request('POST', '/api/runs', { model: { kind: 'se-cnn', imageSize: 32, numClasses: 2, clinical: clinicalSchema } })).rejects.toThrow(
      /400.*model.clinical.*backbone-head/,
    );
    await expect(
      fed.admin.request('POST', '/api/runs', { model: { ...model, clinical: { columns: [{ name: 'age', type: 'numeric', min: 90, max: 20 }] } } }),
    ).rejects.toThrow(/400.*max/);
    const { id, config } = await fed.admin.request<{ id: string; config: { model: ModelSpec } }>('POST', '/api/runs', {
      rounds: 1,
      minSites: 2,
      model,
      batchSize: 32,
      personalizeEpochs: 0,
      seed: 5,
    });
    expect(config.model.clinical).toEqual(clinicalSchema);
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const report = await finished(id);
    expect(report.statusReason).toBeNull();
    expect(report.status).toBe('completed');
    expect(report.rounds[0].participants).toEqual(['site-1', 'site-2']);
    // The coordinator has no table: its held-out patients take the no-record path.
    expect(report.rounds[0].global.samples).toBe(heldOutCount);

    // The bytes each site sealed for this run: the envelope's fields, numeric metrics, and exactly
    // the tensors of the run's global model (names and shapes follow from the run config alone).
    const run = await fed.admin.request<{ currentModelHash: string }>('GET', `/api/runs/${id}`);
    const global = decodeWeights(await fed.admin.bytes(`/api/models/${run.currentModelHash}`), run.currentModelHash);
    const expected = global.map((t) => [t.name, [...t.shape]]);
    expect(expected.map(([name]) => name)).toEqual(expect.arrayContaining(['tab_fc/kernel', 'head/kernel']));
    for (const siteId of ['site-1', 'site-2']) {
      const outbox = join(fed.siteStateDir(siteId), 'outbox');
      const envelopes = readdirSync(outbox)
        .filter((f) => f.endsWith('.plaintext.bin'))
        .map((f) => readFileSync(join(outbox, f)))
        .map((bytes) => ({ bytes, envelope: decodeUpdateEnvelope(bytes) }))
        .filter((e) => e.envelope.header.runId === id);
      expect(envelopes).toHaveLength(1);
      for (const { bytes, envelope } of envelopes) {
        const text = bytes.toString('latin1');
        expect(text).not.toMatch(/SOB_|\.png|tumourSizeMm|birads|receptor|positive|negative/);
        expect(Object.keys(envelope.header).sort()).toEqual(['baseModelHash', 'kind', 'metrics', 'numSamples', 'round', 'runId', 'siteId']);
        expect(Object.values(envelope.header.metrics).every((v) => typeof v === 'number')).toBe(true);
        expect(envelope.weights.map((t) => [t.name, [...t.shape]])).toEqual(expected);
      }
    }
    const manifest = JSON.parse(readFileSync(join(report.final.modelsDir, 'global', 'histofed-model.json'), 'utf8'));
    expect(manifest.spec.clinical).toEqual(clinicalSchema);

    // predict --clinical: each image's patient (--patients) looked up in the table; without a row, the no-record path.
    const files = (await readBreakHisTree(heldOut)).images.slice(0, 3);
    const patientsCsv = join(work, 'patients.csv');
    writeFileSync(patientsCsv, ['file,patient', ...files.map((f) => `${f.path},${f.patientId}`)].join('\n') + '\n');
    const predict = (extra: string[]) =>
      spawnSync(process.execPath, [SITE_BIN, 'predict', '--model', join(report.final.modelsDir, 'global'), '--json', '--patients', patientsCsv, ...extra, ...files.map((f) => f.path)], {
        cwd: REPO_ROOT,
        encoding: 'utf8',
        timeout: 300_000,
      });
    const withTable = predict(['--clinical', clinicalCsv]);
    expect(withTable.stderr).not.toMatch(/histofed-site:/);
    expect(withTable.status).toBe(0);
    const read = predictionReportSchema.parse(JSON.parse(withTable.stdout));
    expect(read.model.clinical).toEqual({ columns: clinicalSchema.columns.map((c) => c.name), table: clinicalCsv });
    expect(read.images.map((i) => i.clinicalRecord)).toEqual(files.map((f) => clinicalPatients.includes(f.patientId)));
    const without = predict([]);
    expect(without.status).toBe(0);
    expect(without.stderr).toMatch(/without --clinical CSV every patient takes its no-record path/);
    expect(predictionReportSchema.parse(JSON.parse(without.stdout)).images.every((i) => i.clinicalRecord === false)).toBe(true);
  });
});
