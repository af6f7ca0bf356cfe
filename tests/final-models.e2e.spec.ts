/**
 * Final models reach the sites (issue 15), over real processes: a coordinator and two site
 * clients finish a run with personalization; each site receives — signed by the coordinator, whose
 * signing key it pinned when it enrolled — the global model, its own personalized model (never
 * the other site's) and an ensemble over them, byte for byte what the coordinator saved; libs/ml
 * loads them; `histofed-site models --json` lists them. A site that lost them gets them again at
 * its next connection; a site whose pinned key is not the coordinator's stops taking part; the
 * delivered package is signed over every file's hash, and a file that does not match it is refused.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fingerprint, fromBase64, generateSigningKeyPair, toBase64, verify } from '@histofed/crypto';
import { generateSyntheticBreakHis } from '@histofed/data';
import { loadEnsemble, loadModel, selectBackend } from '@histofed/ml';
import { FINAL_MODELS_DELIVERY_FILE, FINAL_MODELS_ENSEMBLE_FILE, FinalModelEvents, finalModelsPackageOf, finalModelsSignedBytes } from '@histofed/protocol';
import { Federation, REPO_ROOT, SITE_BIN, startFederation } from '@histofed/harness';

/** `<state dir>/coordinator-key.json`: the coordinator key a site pinned. */
const PINNED_KEY_FILE = 'coordinator-key.json';

interface ListedRun {
  runId: string;
  path: string;
  signedBy: string;
  verified?: boolean;
  secureAggregation: boolean;
  models: { name: string; kind: string; created: string; classes: string[]; calibration: boolean; path: string }[];
  ensemble: { path: string; members: string[] } | null;
  problems: string[];
}

describe('final models at the sites', () => {
  let work: string;
  let fed: Federation;
  let runId: string;
  let coordinatorFingerprint: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-final-models-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 5, patientsPerSubtype: 2, imagesPerPatient: 4 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 2, seed: 5 });
    coordinatorFingerprint = String((await fed.coordinator.waitFor((l) => l.msg === 'coordinator listening', 10_000, 'start-up')).signKeyFingerprint);
    const run = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 2,
      minSites: 2,
      localEpochs: 1,
      batchSize: 8,
      personalizeEpochs: 1,
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 },
    });
    runId = run.id;
    await fed.admin.request('POST', `/api/runs/${runId}/start`);
    const final = await fed.admin.waitForRun(runId, 8 * 60_000);
    expect([final.status, final.statusReason]).toEqual(['completed', null]);
    await Promise.all(
      fed.sites.map((s) => s.waitFor((l) => l.msg === 'final models installed' && l.runId === runId, 120_000, 'the final models')),
    );
  });

  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const pinnedKey = (siteId: string) =>
    JSON.parse(readFileSync(join(fed.siteStateDir(siteId), PINNED_KEY_FILE), 'utf8')) as { signPublicKey: string; fingerprint: string; pinnedOn: string };
  const coordinatorRunDir = () => join(work, 'coordinator', 'models', runId);
  const siteRunDir = (siteId: string) => join(fed.siteStateDir(siteId), 'models', runId);
  const listModels = (siteId: string, ...extra: string[]) => {
    const r = spawnSync(process.execPath, [SITE_BIN, 'models', '--state-dir', fed.siteStateDir(siteId), '--json', ...extra], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000 });
    expect([r.status, r.stderr]).toEqual([0, '']);
    return JSON.parse(r.stdout) as { stateDir: string; coordinatorKey: { fingerprint: string; pinnedOn: string } | null; runs: ListedRun[] };
  };

  it('each site pinned the coordinator’s signing key when it enrolled (the fingerprint the coordinator logs)', () => {
    expect(coordinatorFingerprint).toMatch(/^[0-9a-f]{4}(:[0-9a-f]{4}){4}$/);
    for (const siteId of fed.siteIds) {
      expect(pinnedKey(siteId)).toEqual(expect.objectContaining({ fingerprint: coordinatorFingerprint, pinnedOn: 'enroll' }));
      const site = fed.sites.find((s) => s.name === siteId)!;
      expect(site.lines.find((l) => l.msg === 'coordinator signing key pinned')).toEqual(expect.objectContaining({ on: 'enroll', coordinatorSignKeyFingerprint: coordinatorFingerprint }));
    }
  });

  it('each site holds the global model, its own personalized model and the ensemble over them — not the other site’s model', async () => {
    expect(readdirSync(coordinatorRunDir()).sort()).toEqual([FINAL_MODELS_ENSEMBLE_FILE, 'global', 'site-1', 'site-2'].sort());
    await selectBackend('cpu');
    for (const siteId of fed.siteIds) {
      const other = siteId === 'site-1' ? 'site-2' : 'site-1';
      const dir = siteRunDir(siteId);
      expect(readdirSync(dir).sort()).toEqual([FINAL_MODELS_DELIVERY_FILE, FINAL_MODELS_ENSEMBLE_FILE, 'global', siteId].sort());
      expect(existsSync(join(dir, other))).toBe(false);
      // Byte for byte the coordinator's saved models.
      for (const member of ['global', siteId]) {
        const files = readdirSync(join(coordinatorRunDir(), member)).sort();
        expect(readdirSync(join(dir, member)).sort()).toEqual(files);
        for (const f of files) expect(readFileSync(join(dir, member, f)).equals(readFileSync(join(coordinatorRunDir(), member, f)))).toBe(true);
      }
      const loaded = await loadModel(join(dir, siteId));
      expect(loaded.manifest.provenance).toEqual(expect.objectContaining({ kind: 'site', runId, sites: [siteId] }));
      loaded.model.dispose();
      const ensemble = await loadEnsemble(dir);
      expect(ensemble.manifest.members).toEqual(['global', siteId]);
      expect(ensemble.members.map((m) => m.manifest.provenance.kind)).toEqual(['global', 'site']);
      for (const m of ensemble.members) m.model.dispose();
      // The answer that left the site names the run and the models, nothing else.
      const outbox = readFileSync(join(fed.siteStateDir(siteId), 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const answers = outbox.filter((m) => m.event === FinalModelEvents.offer);
      // One installation; a site that reconnected meanwhile is offered the run again and answers that it holds it.
      const payloads = answers.map((m) => m.payload);
      expect(payloads[0]).toEqual({ ok: true, runId, siteId, installed: ['global', siteId], alreadyInstalled: false });
      for (const p of payloads.slice(1)) expect(p).toEqual({ ok: true, runId, siteId, installed: ['global', siteId], alreadyInstalled: true });
    }
    const delivered = fed.coordinator.lines.filter((l) => l.msg === 'final models delivered' && l.runId === runId);
    expect(delivered.map((l) => [l.siteId, l.installed]).sort()).toEqual([
      ['site-1', ['global', 'site-1']],
      ['site-2', ['global', 'site-2']],
    ]);
    // The other site's personalized model was never offered to a site.
    const offered = fed.coordinator.lines.filter((l) => l.msg === 'final models offered' && l.runId === runId);
    expect(offered.map((l) => [l.siteId, l.models]).sort()).toEqual([
      ['site-1', ['global', 'site-1']],
      ['site-2', ['global', 'site-2']],
    ]);
  });

  it('histofed-site models --json lists them (kind, creation, classes, calibration, path) and --verify checks them', () => {
    const listed = listModels('site-1', '--verify');
    expect(listed.coordinatorKey).toEqual(expect.objectContaining({ fingerprint: coordinatorFingerprint, pinnedOn: 'enroll' }));
    expect(listed.runs).toHaveLength(1);
    const run = listed.runs[0];
    expect(run).toEqual(expect.objectContaining({ runId, path: siteRunDir('site-1'), signedBy: coordinatorFingerprint, verified: true, secureAggregation: false, problems: [] }));
    expect(run.models.map((m) => [m.name, m.kind, m.classes, m.path])).toEqual([
      ['global', 'global', ['benign', 'malignant'], join(siteRunDir('site-1'), 'global')],
      ['site-1', 'personalized', ['benign', 'malignant'], join(siteRunDir('site-1'), 'site-1')],
    ]);
    for (const m of run.models) {
      expect(typeof m.calibration).toBe('boolean');
      expect(Number.isNaN(Date.parse(m.created))).toBe(false);
    }
    expect(run.ensemble).toEqual({ path: siteRunDir('site-1'), members: ['global', 'site-1'], calibration: expect.any(Boolean) });
    const table = spawnSync(process.execPath, [SITE_BIN, 'models', '--state-dir', fed.siteStateDir('site-1')], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`run ${runId} .*signed by ${coordinatorFingerprint}`));
    expect(table.stdout).toMatch(/site-1\s+personalized/);
  });

  it('the delivered package is signed by the coordinator’s key over every file’s hash', () => {
    const record = JSON.parse(readFileSync(join(siteRunDir('site-2'), FINAL_MODELS_DELIVERY_FILE), 'utf8'));
    const pkg = finalModelsPackageOf(record);
    const key = fromBase64(pinnedKey('site-2').signPublicKey);
    expect(fingerprint(key)).toBe(coordinatorFingerprint);
    expect(pkg.models).toEqual(['global', 'site-2']);
    expect(pkg.files.map((f) => f.path)).toContain('site-2/weights.bin');
    expect(verify(finalModelsSignedBytes(pkg), fromBase64(record.signature), key)).toBe(true);
    const altered = { ...pkg, files: pkg.files.map((f) => (f.path === 'site-2/weights.bin' ? { ...f, sha256: '0'.repeat(64) } : f)) };
    expect(verify(finalModelsSignedBytes(altered), fromBase64(record.signature), key)).toBe(false);
    expect(verify(finalModelsSignedBytes({ ...pkg, siteId: 'site-1' }), fromBase64(record.signature), key)).toBe(false);
  });

  it('a file that does not match its signed hash is refused by the site, and nothing is installed', async () => {
    // The coordinator hashes a file once while its size and modification time stay the same; a file
    // changed behind its back keeps them here, so the package it signs names the old hash and the
    // bytes it serves are the tampered ones: the site must catch it.
    const file = join(coordinatorRunDir(), 'site-1', 'weights.bin');
    const when = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    utimesSync(file, when, when);
    const restartWithout = async (what: string) => {
      rmSync(join(fed.siteStateDir('site-1'), 'models'), { recursive: true, force: true });
      await fed.restartSite('site-1', 'SIGTERM');
      const site = fed.sites[fed.siteIds.indexOf('site-1')];
      return site.waitFor((l) => (l.msg === 'final models installed' || l.msg === 'final models refused') && l.runId === runId, 180_000, what);
    };
    // Offered again at its next connection: hashed anew (the time changed), installed.
    expect((await restartWithout('the models, hashed anew')).msg).toBe('final models installed');
    const original = readFileSync(file);
    const tampered = Buffer.from(original);
    tampered[tampered.length - 1] ^= 0xff;
    writeFileSync(file, tampered);
    utimesSync(file, when, when);
    try {
      const refused = await restartWithout('the tampered model');
      expect(refused).toEqual(expect.objectContaining({ msg: 'final models refused', level: 'warn', code: 'integrity', reason: expect.stringMatching(/site-1\/weights\.bin: .*sha256 mismatch/) }));
      expect(existsSync(siteRunDir('site-1'))).toBe(false);
      expect(readdirSync(join(fed.siteStateDir('site-1'), 'models'))).toEqual([]); // no temporary leftovers
      await fed.coordinator.waitFor(
        (l) => l.msg === 'final models not installed by the site' && l.siteId === 'site-1' && l.code === 'integrity',
        30_000,
        'the site’s refusal in the coordinator’s log',
      );
    } finally {
      writeFileSync(file, original);
    }
  });

  it('a site that lost its models gets them again at its next connection', async () => {
    rmSync(join(fed.siteStateDir('site-1'), 'models'), { recursive: true, force: true });
    await fed.restartSite('site-1', 'SIGTERM');
    const site = fed.sites[fed.siteIds.indexOf('site-1')];
    const installed = await site.waitFor((l) => l.msg === 'final models installed' && l.runId === runId, 180_000, 'the final models again');
    expect(installed).toEqual(expect.objectContaining({ models: ['global', 'site-1'], alreadyInstalled: false }));
    expect(readdirSync(siteRunDir('site-1')).sort()).toEqual([FINAL_MODELS_DELIVERY_FILE, FINAL_MODELS_ENSEMBLE_FILE, 'global', 'site-1'].sort());
    expect(listModels('site-1', '--verify').runs[0].verified).toBe(true);
  });

  it('with FedBN each site receives the global model with its own local tensors (global@<site>)', async () => {
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 1,
      minSites: 2,
      localEpochs: 1,
      batchSize: 8,
      personalizeEpochs: 1,
      localTensors: 'batch-norm',
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2, options: { batchNorm: 1 } },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const run = await fed.admin.waitForRun(id, 8 * 60_000);
    expect([run.status, run.statusReason]).toEqual(['completed', null]);
    await Promise.all(fed.sites.map((s) => s.waitFor((l) => l.msg === 'final models installed' && l.runId === id, 120_000, 'the FedBN run’s final models')));
    expect(readdirSync(join(work, 'coordinator', 'models', id)).sort()).toEqual([FINAL_MODELS_ENSEMBLE_FILE, 'global@site-1', 'global@site-2', 'site-1', 'site-2'].sort());
    await selectBackend('cpu');
    for (const siteId of fed.siteIds) {
      const dir = join(fed.siteStateDir(siteId), 'models', id);
      expect(readdirSync(dir).sort()).toEqual([FINAL_MODELS_DELIVERY_FILE, FINAL_MODELS_ENSEMBLE_FILE, `global@${siteId}`, siteId].sort());
      const ensemble = await loadEnsemble(dir);
      expect(ensemble.manifest.members).toEqual([`global@${siteId}`, siteId]);
      for (const m of ensemble.members) m.model.dispose();
      const listed = listModels(siteId).runs.find((r) => r.runId === id)!;
      expect(listed.models.map((m) => [m.name, m.kind])).toEqual([
        [`global@${siteId}`, 'global+local-tensors'],
        [siteId, 'personalized'],
      ]);
    }
  });

  it('a site whose pinned key is not the coordinator’s refuses to take part, saying what to do', async () => {
    const file = join(fed.siteStateDir('site-2'), PINNED_KEY_FILE);
    const pin = JSON.parse(readFileSync(file, 'utf8'));
    const impostor = generateSigningKeyPair().publicKey;
    writeFileSync(file, JSON.stringify({ ...pin, signPublicKey: toBase64(impostor), fingerprint: fingerprint(impostor) }));
    await fed.restartSite('site-2', 'SIGTERM');
    const site = fed.sites[fed.siteIds.indexOf('site-2')];
    const refused = await site.waitFor((l) => l.msg === 'coordinator signing key differs from the pinned one: not taking part', 120_000, 'the key check');
    expect(refused).toEqual(expect.objectContaining({ level: 'error', on: 'enroll', error: expect.stringMatching(new RegExp(`presents fingerprint ${coordinatorFingerprint}.*delete .*${PINNED_KEY_FILE}`)) }));
    expect(await site.exited).toBe(1);
    expect(site.lines.some((l) => l.msg === 'connected to coordinator')).toBe(false);
  });
});
