/**
 * Active learning at the sites (issue 16) over real processes: a federated run's final models at a
 * site rank its unlabelled images (`histofed-site suggest`), the queue is filled in from the known
 * truth and imported (`histofed-site label import`; a bad queue is refused with its rows), and the running
 * site client picks the labels up and the next run trains on more images there — while the coordinator learns only the count, and
 * the site's outbox holds no file name. Then suggest on the real sample under random names.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { generateSyntheticBreakHis, readBreakHisTree } from '@histofed/data';
import { Federation, REPO_ROOT, SITE_BIN, startFederation } from '@histofed/harness';

const sample = join(REPO_ROOT, '..', 'shared', 'data', 'breakhis-sample');
/**
 * Runs the site CLI without blocking the test's event loop (a blocked loop would keep the admin
 * client's idle keep-alive connections after the coordinator closed them).
 */
const site = (args: string[], timeout = 300_000): Promise<{ status: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SITE_BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, DATABASE_URL: '' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });

interface Truth {
  label: string;
  subtype: string;
  patient: string;
}

/** Copies a tree's images under random names (no label in any name); returns the truth per copied file. */
async function copyUnderRandomNames(tree: string, into: string, patientOf: (p: string) => string): Promise<Map<string, Truth>> {
  mkdirSync(into, { recursive: true });
  const truth = new Map<string, Truth>();
  for (const im of (await readBreakHisTree(tree)).images) {
    const file = join(into, `${randomBytes(6).toString('hex')}.png`);
    copyFileSync(im.path, file);
    truth.set(file, { label: im.label, subtype: im.subtype, patient: patientOf(im.patientId) });
  }
  return truth;
}

/** A queue with its label columns filled from the truth. */
function fillQueue(queue: string, out: string, truth: Map<string, Truth>): string[] {
  const lines = readFileSync(queue, 'utf8').trim().split('\n');
  const header = lines[0].split(',');
  expect(header).toEqual(['rank', 'file', 'patient', 'suggested_class', 'suggested_subtype', 'probability', 'score', 'strategy', 'why', 'label_class', 'label_subtype']);
  const files: string[] = [];
  const filled = [lines[0], ...lines.slice(1).map((l) => {
    expect(l.endsWith(',,')).toBe(true);
    const file = l.split(',')[1];
    files.push(file);
    const t = truth.get(file)!;
    return `${l.slice(0, -2)},${t.label},${t.subtype}`;
  })];
  writeFileSync(out, filled.join('\n') + '\n');
  return files;
}

describe('active learning: suggest -> label import -> the next run trains on more images', () => {
  let work: string;
  let fed: Federation;
  const runConfig = { rounds: 1, minSites: 2, localEpochs: 1, model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 } };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-active-'));
    await generateSyntheticBreakHis(join(work, 'data'), { seed: 8, patientsPerSubtype: 2, imagesPerPatient: 4 });
    fed = await startFederation({ dataDir: join(work, 'data'), workDir: work, sites: 2, seed: 8, auditPlaintext: true });
  });
  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('queues uncertain images spread over patients, imports the labels, and only the count reaches the coordinator', async () => {
    const runOnce = async (extra: object = {}) => {
      const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', { ...runConfig, ...extra });
      await fed.admin.request('POST', `/api/runs/${id}/start`);
      const run = await fed.admin.waitForRun<{ status: string; statusReason: string | null }>(id, 600_000);
      expect(run).toMatchObject({ status: 'completed' });
      const contributions = await fed.admin.request<{ siteId: string; kind: string; status: string; numSamples: number | null }[]>('GET', `/api/runs/${id}/rounds/1/contributions`);
      const mine = contributions.find((c) => c.siteId === 'site-2' && c.kind === 'round' && c.status === 'accepted');
      return { id, samples: mine!.numSamples as number };
    };
    // The first run also trains a boosted member (issue 16): one more federated round from the final
    // global model, each real site weighing its training images by the global model's errors.
    const first = await runOnce({ ensemble: { boosting: { members: 1, rounds: 1 } } });
    await fed.sites[1].waitFor((l) => l.msg === 'final models installed' && l.runId === first.id, 120_000, 'site-2 final models');
    const boosted = await fed.admin.request<{ final: { ensembleMembers: string[] } }>('GET', `/api/runs/${first.id}`);
    expect(boosted.final.ensembleMembers).toEqual(expect.arrayContaining(['global', 'global-b1']));
    for (const s of fed.sites) {
      const weighed = s.lines.find((l) => l.msg === 'boosting weights' && l.runId === first.id);
      expect(weighed).toMatchObject({ round: 2, members: 1 });
      expect(Number(weighed?.maxWeight)).toBeGreaterThanOrEqual(Number(weighed?.minWeight));
    }
    const boostRound = await fed.admin.request<{ siteId: string; kind: string; status: string }[]>('GET', `/api/runs/${first.id}/rounds/2/contributions`);
    expect(boostRound.filter((c) => c.kind === 'boost' && c.status === 'accepted').map((c) => c.siteId).sort()).toEqual(['site-1', 'site-2']);

    // Another hospital's images (other patients), under random names, patients from a CSV.
    await generateSyntheticBreakHis(join(work, 'other'), { seed: 31, patientsPerSubtype: 1, imagesPerPatient: 4 });
    const unlabeled = join(work, 'unlabeled');
    const truth = await copyUnderRandomNames(join(work, 'other'), unlabeled, (p) => `case-${p.replace(/[^0-9A-Za-z]/g, '')}`);
    writeFileSync(join(work, 'patients.csv'), ['file,patient', ...[...truth].map(([f, t]) => `${basename(f)},${t.patient}`)].join('\n') + '\n');
    const state = fed.siteStateDir('site-2');
    const queue = join(work, 'queue.csv');
    const s = await site(['suggest', '--model', join(state, 'models', first.id), '--budget', '8', '--strategy', 'ensemble', '--unlabeled', unlabeled,
      '--patients', join(work, 'patients.csv'), '--out', queue, '--state-dir', state, '--cache-dir', join(work, 'image-cache'), '--json']);
    expect(s.stderr).not.toMatch(/histofed-site:/);
    expect(s.status).toBe(0);
    const summary = JSON.parse(s.stdout);
    expect(summary).toMatchObject({ strategy: 'ensemble', candidates: 32, patients: 8, perPatientCap: 1, patientSource: 'csv' });
    expect(summary.queue).toHaveLength(8);
    // Diversity: one image of each of the 8 patients; ranked by member disagreement.
    expect(new Set(summary.queue.map((q: { patient: string }) => q.patient)).size).toBe(8);
    const scores = summary.queue.map((q: { score: number }) => q.score);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);

    // A bad queue is refused with its row, and stores nothing.
    const bad = join(work, 'bad.csv');
    const lines = readFileSync(queue, 'utf8').trim().split('\n');
    writeFileSync(bad, [lines[0], `${lines[1].slice(0, -2)},tumour,`].join('\n') + '\n');
    const refused = await site(['label', 'import', '--queue', bad, '--state-dir', state]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/1 bad row, nothing imported:\n {2}line 2 \(.*\): unknown class "tumour"/);

    const before = (await fed.admin.request<{ siteId: string; trainSamples: number; labelledImages: number }[]>('GET', '/api/sites')).find((x) => x.siteId === 'site-2')!;
    expect(before.labelledImages).toBe(0);
    const filled = join(work, 'filled.csv');
    const queued = fillQueue(queue, filled, truth);
    const imported = await site(['label', 'import', '--queue', filled, '--state-dir', state, '--json']);
    expect(imported.stderr).not.toMatch(/histofed-site:/);
    expect(JSON.parse(imported.stdout)).toMatchObject({ imported: 8, replaced: 0, skipped: 0, total: 8 });
    // suggest leaves labelled images out next time.
    const again = await site(['suggest', '--model', join(state, 'models', first.id), '--budget', '4', '--unlabeled', unlabeled, '--out', join(work, 'q2.csv'),
      '--state-dir', state, '--cache-dir', join(work, 'image-cache'), '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ candidates: 24, alreadyLabelled: 8 });

    // The running site client picks the new labels up between tasks and announces the new counts.
    const reloaded = await fed.sites[1].waitFor((l) => l.msg === 'labels reloaded', 120_000, 'site-2 to read its label store');
    expect(reloaded).toMatchObject({ labelledImages: 8, newImages: 8, trainImages: before.trainSamples + 8 });
    const told = await fed.coordinator.waitFor((l) => l.msg === 'site labelled new images', 30_000, 'the count');
    expect(told).toMatchObject({ siteId: 'site-2', newImages: 8, labelledImages: 8, text: 'site-2 labelled 8 new images (8 in all)' });
    const after = (await fed.admin.request<{ siteId: string; trainSamples: number; labelledImages: number }[]>('GET', '/api/sites')).find((x) => x.siteId === 'site-2')!;
    expect(after).toMatchObject({ labelledImages: 8, trainSamples: reloaded.trainImages });

    const second = await runOnce();
    expect(second.samples).toBe(first.samples + 8);

    // What left site-2: counts only — no name of an unlabelled image, no path, no label of one.
    const outbox = join(state, 'outbox');
    const log = readFileSync(join(outbox, 'messages.jsonl'), 'utf8');
    const hellos = log.trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.event === 'site:hello');
    expect(hellos.at(-1).payload).toMatchObject({ labelledImages: 8, trainSamples: reloaded.trainImages });
    expect(hellos[0].payload.labelledImages).toBeUndefined();
    const names = [...truth.keys()].map((f) => basename(f, '.png'));
    const sent = [log, ...readdirSync(outbox).filter((f) => f.endsWith('.plaintext.bin')).map((f) => readFileSync(join(outbox, f)).toString('latin1'))];
    for (const text of sent) {
      expect(text).not.toMatch(/unlabeled|queue|labels\.json|case-/);
      for (const n of names) expect(text.includes(n)).toBe(false);
    }
    for (const q of queued) expect(log.includes(basename(q))).toBe(false);
  });
});

describe('suggest on the real sample under random names', () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'hf-active-real-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('ranks the 213 images by entropy and by coreset on tile features, at most one image per patient for 20', async () => {
    const cache = join(work, 'cache');
    const model = join(work, 'model');
    // Small tiles of quarter-size images keep it short (as in predict.e2e): 4 tiles of 96 px per image.
    const t = await site(['train', '--data', sample, '--out', model, '--image-size', '96', '--tile-scale', '0.25', '--views', '1', '--cache-dir', cache, '--epochs', '1', '--min-epochs', '1', '--json'], 600_000);
    expect(t.stderr).not.toMatch(/histofed-site:/);
    const unlabeled = join(work, 'unlabeled');
    const truth = await copyUnderRandomNames(sample, unlabeled, (p) => p);
    writeFileSync(join(work, 'patients.csv'), ['file,patient', ...[...truth].map(([f, v]) => `${basename(f)},${v.patient}`)].join('\n') + '\n');
    for (const strategy of ['entropy', 'coreset']) {
      const out = join(work, `${strategy}.csv`);
      const s = await site(['suggest', '--model', model, '--budget', '20', '--strategy', strategy, '--unlabeled', unlabeled, '--patients', join(work, 'patients.csv'), '--out', out, '--cache-dir', cache, '--json']);
      expect(s.stderr).not.toMatch(/histofed-site:/);
      const summary = JSON.parse(s.stdout);
      expect(summary).toMatchObject({ candidates: 213, patients: 37, perPatientCap: 1, failures: [] });
      expect(summary.queue).toHaveLength(20);
      expect(new Set(summary.queue.map((q: { patient: string }) => q.patient)).size).toBe(20);
      // The queue, filled in from the truth, imports into a site's label store (no BreakHis name needed).
      const state = join(work, `state-${strategy}`);
      fillQueue(out, join(work, `${strategy}-filled.csv`), truth);
      const imported = await site(['label', 'import', '--queue', join(work, `${strategy}-filled.csv`), '--state-dir', state, '--json']);
      expect(JSON.parse(imported.stdout)).toMatchObject({ imported: 20, total: 20 });
    }
  });
});
