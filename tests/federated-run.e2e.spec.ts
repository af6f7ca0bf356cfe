/**
 * End to end, on real components: a coordinator (embedded PostgreSQL) and two site clients as
 * separate processes over socket.io on localhost, plus a rogue participant. Two FedAvg rounds.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { BREAKHIS_SUBTYPE_PARENTS, WeightSet, decodeWeights, maxAbsDifference } from '@histofed/fl-core';
import { generateSyntheticBreakHis, readBreakHisTree } from '@histofed/data';
import { CalibrationEvents, EnsembleFitEvents, FinalModelEvents, ProgressEvents, SiteEvents, decodeUpdateEnvelope } from '@histofed/protocol';
import { StackingCombiner, combineMembers, readEnsembleManifest } from '@histofed/ml';
import { COORDINATOR_BIN, Federation, REPO_ROOT, startFederation } from '@histofed/harness';
import { predictionReportSchema, type PredictionReport } from '@histofed/inference';
import { RogueSite } from '@histofed/harness';
import { SCREENSHOT_DIR, itWithChromium, launchChromium } from './support/browser';

interface Contribution {
  siteId: string;
  kind: string;
  status: string;
  reason: string | null;
  numSamples: number | null;
  modelHash: string | null;
}
interface Round {
  round: number;
  status: string;
  modelHash: string;
  baseModelHash: string;
  participants: string[];
}

/** FedAvg computed independently of libs/aggregation: sum_i n_i x_i / sum_i n_i, in float64. */
function referenceFedAvg(models: { n: number; weights: WeightSet }[]): Float64Array[] {
  const total = models.reduce((s, m) => s + m.n, 0);
  return models[0].weights.map((t, i) => {
    const acc = new Float64Array(t.values.length);
    for (const m of models) m.weights[i].values.forEach((v, j) => (acc[j] += (m.n / total) * v));
    return acc;
  });
}

describe('a federated run across real processes', () => {
  let work: string;
  let data: string;
  let fed: Federation;
  let rogue: RogueSite;
  let runId: string;
  let rounds: Round[];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-e2e-'));
    data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 3, patientsPerSubtype: 2, imagesPerPatient: 4 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 2, seed: 3, auditPlaintext: true });

    // The rogue enrolls as a participant with data, then misbehaves in round 1 and declines round 2.
    rogue = new RogueSite(fed.url, 'rogue', async (r, task) => {
      if (task.config.round === 1) {
        await r.send('malformed', SiteEvents.update, 'this is not an update');
        await r.deliver('wrong round', r.sealedWrongShape(task, 99));
        await r.deliver('wrong shape', r.sealedWrongShape(task));
      } else {
        await r.send('failure', SiteEvents.taskFailed, { runId: task.config.runId, round: task.config.round, kind: task.kind, reason: 'declined' });
      }
    });
    expect((await rogue.enroll()).status).toBe('approved');
    expect((await rogue.hello(10)).ok).toBe(true);

    const run = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      name: 'e2e',
      rounds: 2,
      minSites: 2,
      maxSites: 3,
      localEpochs: 1,
      batchSize: 8,
      // Larger than socket.io's 1 MB default message size: the limit is configured on both ends.
      model: { kind: 'small-cnn', imageSize: 32, numClasses: 2, options: { width: 2, denseUnits: 2048 } },
      personalizeEpochs: 1,
      roundTimeoutSeconds: 300,
      waitForSitesSeconds: 60,
      // Issue 16: round 1's global model joins the ensemble, weighted with the sites (numbers only).
      ensemble: { snapshots: 1, combiner: 'weighted' },
    });
    runId = run.id;
    await fed.admin.request('POST', `/api/runs/${runId}/start`);
    const final = await fed.admin.waitForRun(runId, 8 * 60_000);
    expect(final).toEqual(expect.objectContaining({ status: 'completed', statusReason: null }));
    rounds = await fed.admin.request<Round[]>('GET', `/api/runs/${runId}/rounds`);
    // The sites then receive their final models (issue 15) and answer; their outboxes are complete after that.
    await Promise.all(fed.sites.map((s) => s.waitFor((l) => l.msg === 'final models installed' && l.runId === runId, 120_000, 'the final models')));
  });

  afterAll(async () => {
    rogue?.close();
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const model = async (hash: string) => decodeWeights(await fed.admin.bytes(`/api/models/${hash}`), hash);

  it('stores, for every round, the FedAvg of the sites\' decrypted updates', async () => {
    expect(rounds.map((r) => [r.round, r.status])).toEqual([
      [1, 'completed'],
      [2, 'completed'],
    ]);
    for (const round of rounds) {
      const contributions = await fed.admin.request<Contribution[]>('GET', `/api/runs/${runId}/rounds/${round.round}/contributions`);
      const accepted = contributions.filter((c) => c.status === 'accepted' && c.kind === 'round');
      expect(accepted.map((c) => c.siteId).sort()).toEqual(['site-1', 'site-2']);
      expect(round.participants).toEqual(['site-1', 'site-2']);
      const updates = await Promise.all(accepted.map(async (c) => ({ n: c.numSamples!, weights: await model(c.modelHash!) })));
      const expected = referenceFedAvg(updates);
      const global = await model(round.modelHash);
      let worst = 0;
      global.forEach((t, i) => t.values.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[i][j])))));
      expect(worst).toBeLessThan(1e-6);
      // A real aggregate: it differs from each site's update and from the model the round started from.
      for (const u of updates) expect(maxAbsDifference(global, u.weights)).toBeGreaterThan(1e-6);
      expect(maxAbsDifference(global, await model(round.baseModelHash))).toBeGreaterThan(1e-6);
    }
    expect(rounds[1].baseModelHash).toBe(rounds[0].modelHash);
  });

  it('moves models larger than socket.io\'s default 1 MB message', async () => {
    const bytes = await fed.admin.bytes(`/api/models/${rounds[0].modelHash}`);
    expect(bytes.length).toBeGreaterThan(1_000_000);
  });

  it('decrypts exactly what each site sealed, and a site sends only weights, counts and metrics', async () => {
    const fileNames = (await readBreakHisTree(data)).images.map((i) => basename(i.relativePath));
    expect(fileNames.length).toBeGreaterThan(0);
    const pngSignature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    for (const siteId of ['site-1', 'site-2']) {
      const outbox = join(fed.siteStateDir(siteId), 'outbox');
      const log = readFileSync(join(outbox, 'messages.jsonl'), 'utf8');
      const messages = log.trim().split('\n').map((l) => JSON.parse(l));
      // (The calibration's two answers, numbers only: checked in fedbn.e2e; the ensemble weighting's below.)
      expect(new Set(messages.map((m) => m.event))).toEqual(
        new Set([SiteEvents.challenge, SiteEvents.hello, SiteEvents.update, FinalModelEvents.offer, CalibrationEvents.nll, CalibrationEvents.review, EnsembleFitEvents.nll, ProgressEvents.progress]),
      );
      // Issue 17: task progress for the dashboard — a stage, epoch/batch counts and a batch loss, nothing else.
      for (const m of messages.filter((x) => x.event === ProgressEvents.progress)) {
        expect(['batch', 'batches', 'epoch', 'epochs', 'kind', 'loss', 'round', 'runId', 'stage']).toEqual(expect.arrayContaining(Object.keys(m.payload)));
        expect(Object.values(m.payload).every((v) => typeof v === 'number' || /^[a-z0-9-]+$/.test(String(v)))).toBe(true);
      }
      // The answer to the final models: run, site and the names of the models installed, nothing else.
      expect(messages.filter((m) => m.event === FinalModelEvents.offer).map((m) => m.payload)).toEqual([
        { ok: true, runId, siteId, installed: ['global', 'global-r1', siteId], alreadyInstalled: false },
      ]);
      // challenge: the site id; hello: ids, public keys, signature, counts, software — nothing else.
      expect(Object.keys(messages[0].payload)).toEqual(['siteId']);
      expect(Object.keys(messages[1].payload).sort()).toEqual(
        ['backend', 'boxPublicKey', 'protocolVersion', 'signPublicKey', 'signature', 'siteId', 'software', 'trainSamples', 'validationSamples'].sort(),
      );
      const plaintexts = readdirSync(outbox).filter((f) => f.endsWith('.plaintext.bin'));
      expect(plaintexts.length).toBe(3); // two rounds + personalization
      for (const file of plaintexts) {
        const bytes = readFileSync(join(outbox, file));
        const text = bytes.toString('latin1');
        for (const name of fileNames) expect(text.includes(name)).toBe(false);
        expect(text).not.toMatch(/SOB_|\.png|BreaKHis|histology/);
        expect(bytes.includes(pngSignature)).toBe(false);
        const envelope = decodeUpdateEnvelope(bytes);
        expect(Object.keys(envelope.header).sort()).toEqual(['baseModelHash', 'kind', 'metrics', 'numSamples', 'round', 'runId', 'siteId']);
        expect(Object.values(envelope.header.metrics).every((v) => typeof v === 'number')).toBe(true);
        // The coordinator decrypted the very same weights.
        if (envelope.header.kind === 'round') {
          const contributions = await fed.admin.request<Contribution[]>('GET', `/api/runs/${runId}/rounds/${envelope.header.round}/contributions`);
          const stored = contributions.find((c) => c.siteId === siteId && c.status === 'accepted' && c.kind === 'round')!;
          expect(maxAbsDifference(await model(stored.modelHash!), envelope.weights)).toBe(0);
        }
      }
      // An update is the sealed ciphertext (uploaded in chunks: binary, no readable header) and a
      // signed message naming it.
      const update = messages.find((m) => m.event === SiteEvents.update);
      expect(Object.keys(update.payload).sort()).toEqual(
        ['kind', 'nonce', 'round', 'runId', 'sealed', 'sealedBytes', 'sealedSha256', 'signature', 'siteId'].sort(),
      );
      expect(update.payload.sealed.sha256).toBe(update.payload.sealedSha256);
    }
  });

  it('weights the ensemble with the sites (issue 16): a weighted-mean combiner summing to 1, from numbers only', async () => {
    const run = await fed.admin.request<{ final: { modelsDir: string; ensembleFit: { combiner: string; weights: Record<string, number>; fittedMembers: string[]; validation: { images: number; meanNll: number; weightedNll: number }; sites: { answered: string[] } } } }>('GET', `/api/runs/${runId}`);
    const fit = run.final.ensembleFit;
    expect(fit).toEqual(expect.objectContaining({ combiner: 'weighted-mean', fittedMembers: ['global', 'global-r1'], sites: { answered: ['site-1', 'site-2'], refused: {} } }));
    expect(fit.validation.images).toBeGreaterThan(0);
    expect(fit.validation.weightedNll).toBeLessThanOrEqual(fit.validation.meanNll);
    const manifest = await readEnsembleManifest(run.final.modelsDir);
    expect(manifest.members).toEqual(['global', 'global-r1', 'site-1', 'site-2']);
    const combine = manifest.combine as { kind: string; weights: number[]; fittedOn: string };
    expect(combine.kind).toBe('weighted-mean');
    expect(combine.weights.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
    // The personalized models (which the other site cannot score) keep the mean's share, 1/4 each.
    expect(combine.weights[2]).toBeCloseTo(0.25, 9);
    expect(combine.weights[3]).toBeCloseTo(0.25, 9);
    expect(combine.weights.map((w) => Math.round(w * 1e6) / 1e6)).toEqual(manifest.members.map((m) => fit.weights[m]));
    expect(combine.fittedOn).toMatch(/^federated: 2 sites/);
    for (const siteId of ['site-1', 'site-2']) {
      const messages = readFileSync(join(fed.siteStateDir(siteId), 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const answers = messages.filter((m) => m.event === EnsembleFitEvents.nll);
      expect(answers).toHaveLength(1);
      const { payload } = answers[0];
      expect(Object.keys(payload).sort()).toEqual(['ok', 'report', 'runId', 'signature', 'siteId']);
      expect(Object.keys(payload.report).sort()).toEqual(['count', 'members', 'nll']);
      expect(payload.report.members.every((h: string) => /^[0-9a-f]{64}$/.test(h))).toBe(true);
      expect(payload.report.nll.length).toBeGreaterThan(1);
      expect([payload.report.count, ...payload.report.nll].every((v) => typeof v === 'number' && Number.isFinite(v))).toBe(true);
    }
  });

  it('rejects malformed, mis-addressed and mis-shaped messages with a logged reason, and the run goes on', async () => {
    const byWhat = Object.fromEntries(rogue.replies.map((r) => [r.what, r.ack]));
    expect(byWhat['malformed']).toEqual({ ok: false, error: expect.stringMatching(/^site:update: /) });
    expect(byWhat['wrong round']).toEqual({ ok: false, error: expect.stringMatching(/no open round task for run .* round 99/) });
    expect(byWhat['wrong shape']).toEqual({ ok: false, error: expect.stringMatching(/update: expected \d+ tensors, got 1/) });
    const logged = fed.coordinator.lines.filter((l) => l.msg === 'message rejected' || l.msg === 'contribution rejected');
    const reasons = logged.map((l) => String(l.reason));
    expect(reasons.some((r) => r.startsWith('site:update: '))).toBe(true);
    expect(reasons.some((r) => /round 99/.test(r))).toBe(true);
    expect(reasons.some((r) => /expected \d+ tensors/.test(r))).toBe(true);
    const stored = await fed.admin.request<Contribution[]>('GET', `/api/runs/${runId}/rounds/1/contributions`);
    expect(stored.filter((c) => c.siteId === 'rogue').map((c) => c.status)).toEqual(['rejected']);
    expect(rogue.tasks.map((t) => t.config.round)).toEqual([1, 2, 2]);
  });

  it('serves the OpenAPI document and refuses admin calls without the token', async () => {
    const doc = (await (await fetch(`${fed.url}/api/docs-json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/api/runs', '/api/runs/{id}/start', '/api/runs/{id}/rounds', '/api/runs/{id}/metrics', '/api/sites']),
    );
    expect((await fetch(`${fed.url}/api/runs`)).status).toBe(401);
    expect((await fetch(`${fed.url}/api/runs`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await fetch(`${fed.url}/api/health`)).status).toBe(200);
    const bad = await fetch(`${fed.url}/api/runs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fed.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ rounds: 0, minSites: 5, maxSites: 2, colour: 'red' }),
    });
    expect(bad.status).toBe(400);
    const message = ((await bad.json()) as { message: string }).message;
    expect(message).toMatch(/run config: /);
    expect(message).toMatch(/rounds/);
    expect(message).toMatch(/colour/);
  });

  it('serves the live dashboard page', async () => {
    const res = await fetch(`${fed.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    expect(await res.text()).toMatch(/api\/runs/);
  });

  itWithChromium('shows sites, the run, its rounds and rejections in the dashboard (Chromium)', async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.goto(fed.url);
      await page.fill('#token', fed.token);
      await page.click('#auth button');
      await page.waitForSelector('#run table tbody tr:nth-child(2) td.num', { timeout: 20_000 });
      const sites = await page.$$eval('#sites tbody tr td:first-child', (tds) => tds.map((td) => td.textContent));
      expect(sites.sort()).toEqual(['rogue', 'site-1', 'site-2']);
      expect(await page.textContent('#runs tbody')).toContain('completed');
      const run = await page.textContent('#run');
      expect(run).toMatch(/rogue: update: expected \d+ tensors/);
      expect(run).toMatch(/Final \(central test split\)/);
      expect(run).toMatch(/ensemble/);
      await page.screenshot({ path: join(SCREENSHOT_DIR, 'federated-run.png'), fullPage: true });
    } finally {
      await browser.close();
    }
  });

  it('classifies an uploaded image with the finished run\'s models (POST /api/predict): admin token, size limit, clear refusals', async () => {
    const image = readFileSync((await readBreakHisTree(data)).images[0].path);
    const post = (query: string, body: Uint8Array | string, headers: Record<string, string> = {}) =>
      fetch(`${fed.url}/api/predict?${query}`, { method: 'POST', headers: { authorization: `Bearer ${fed.token}`, 'content-type': 'image/png', ...headers }, body });
    expect((await fetch(`${fed.url}/api/predict?run=${runId}`, { method: 'POST', body: image })).status).toBe(401);
    const ensemble = await post(`run=${runId}`, image);
    expect(ensemble.status).toBe(200);
    const report = (await ensemble.json()) as PredictionReport;
    expect(predictionReportSchema.safeParse(report).success).toBe(true);
    expect(report.model).toEqual(expect.objectContaining({ kind: 'ensemble', members: ['global', 'global-r1', 'site-1', 'site-2'], classes: ['benign', 'malignant'] }));
    expect(report.images).toHaveLength(1);
    expect(report.images[0]).toEqual(expect.objectContaining({ file: 'upload', stage1: expect.objectContaining({ class: expect.stringMatching(/^(benign|malignant)$/) }) }));
    expect(report.images[0].uncertainty.memberMutualInformation).toBeGreaterThanOrEqual(0);
    const single = (await (await post(`run=${runId}&model=site-1`, image)).json()) as PredictionReport;
    expect(single.model).toEqual(expect.objectContaining({ kind: 'model', members: ['site-1'] }));
    // Refusals, each naming what is wrong.
    const refusal = async (res: Response) => [res.status, ((await res.json()) as { message: string }).message];
    expect(await refusal(await post('run=00000000-0000-4000-8000-000000000000', image))).toEqual([404, expect.stringMatching(/has no saved model "ensemble"/)]);
    expect(await refusal(await post(`run=${runId}&model=site-9`, image))).toEqual([404, expect.stringMatching(/has no saved model "site-9"/)]);
    expect(await refusal(await post(`run=${runId}&model=../../etc`, image))).toEqual([400, expect.stringMatching(/^model: /)]);
    expect(await refusal(await post('run=nope', image))).toEqual([400, 'run: a run id (UUID) is required']);
    expect(await refusal(await post(`run=${runId}`, 'not an image'))).toEqual([422, expect.stringMatching(/^the image cannot be predicted: not a readable image/)]);
    expect(await refusal(await post(`run=${runId}`, JSON.stringify({ image: 'x' }), { 'content-type': 'application/json' }))).toEqual([400, expect.stringMatching(/the request body is the image itself/)]);
    expect(await refusal(await post(`run=${runId}`, new Uint8Array(33 * 1024 * 1024)))).toEqual([413, expect.stringMatching(/takes at most 33554432/)]);
  });

  it('ends with global, per-site and ensemble metrics on the central test split', async () => {
    const metrics = await fed.admin.request<{ backends: { coordinator: string; sites: Record<string, string> }; final: { global: { accuracy: number }; perSite: Record<string, { accuracy: number }>; ensemble: { accuracy: number } } }>(
      'GET',
      `/api/runs/${runId}/metrics`,
    );
    expect(Object.keys(metrics.final.perSite).sort()).toEqual(['site-1', 'site-2']);
    // Every process reports the backend it selected (auto: the same on one machine).
    const { backend } = (await (await fetch(`${fed.url}/api/health`)).json()) as { backend: string };
    expect(['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu']).toContain(backend);
    expect(metrics.backends).toEqual({ coordinator: backend, sites: { 'site-1': backend, 'site-2': backend } });
    for (const m of [metrics.final.global, metrics.final.ensemble, ...Object.values(metrics.final.perSite)]) {
      expect(m.accuracy).toBeGreaterThanOrEqual(0);
      expect(m.accuracy).toBeLessThanOrEqual(1);
    }
  });

  // Last: a second, small run in the same federation (the rogue leaves first), whose ensemble's
  // stacking meta-learner is fitted with the sites. The tests above read the first run's outboxes.
  it('fits a stacking meta-learner with the sites (issue 16): both heads from gradient sums, applied by the central evaluation, predict and evaluate', async () => {
    rogue.close();
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      name: 'e2e-stacking',
      rounds: 2,
      minSites: 2,
      maxSites: 2,
      batchSize: 8,
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2, subtypeParents: [...BREAKHIS_SUBTYPE_PARENTS] },
      personalizeEpochs: 0,
      roundTimeoutSeconds: 300,
      waitForSitesSeconds: 60,
      ensemble: { snapshots: 1, combiner: 'stacking' },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    interface HeadFit {
      steps: number;
      converged: boolean;
      images: number;
      startNll: number;
      fittedNll: number;
      sites: string[];
    }
    const run = await fed.admin.waitForRun<{
      status: string;
      statusReason: string | null;
      final: {
        modelsDir: string;
        ensemble: Record<string, number>;
        ensembleMembers: string[];
        ensembleFit: { combiner: string; fittedMembers: string[]; stacking: { iterations: number; stage1: HeadFit; subtype: HeadFit }; centralMean: Record<string, number>; sites: { answered: string[]; refused: Record<string, string> } };
      };
    }>(id, 5 * 60_000);
    expect(run).toEqual(expect.objectContaining({ status: 'completed', statusReason: null }));
    const fit = run.final.ensembleFit;
    expect(fit).toEqual(expect.objectContaining({ combiner: 'stacking', fittedMembers: ['global', 'global-r1'], sites: { answered: ['site-1', 'site-2'], refused: {} } }));
    for (const head of [fit.stacking.stage1, fit.stacking.subtype]) {
      expect(head.sites).toEqual(['site-1', 'site-2']);
      expect(head.steps).toBeGreaterThan(0);
      expect(head.steps).toBeLessThanOrEqual(fit.stacking.iterations);
      expect(head.images).toBeGreaterThan(0);
      expect(head.fittedNll).toBeLessThan(head.startNll);
    }
    const finished = fed.coordinator.lines.find((l) => l.msg === 'ensemble stacking finished' && l.runId === id);
    expect(finished?.seconds).toEqual(expect.any(Number));

    // The saved manifest names the stacking combiner: finite heads of the right shapes (2 members).
    const manifest = await readEnsembleManifest(run.final.modelsDir);
    expect(manifest.members).toEqual(['global', 'global-r1']);
    const combine = manifest.combine as StackingCombiner;
    expect(combine).toEqual(expect.objectContaining({ kind: 'stacking', fittedOn: expect.stringMatching(/^federated: 2 sites' validation images/) }));
    expect([combine.stage1.coefficients.length, combine.stage1.coefficients[0].length, combine.subtype!.coefficients.length, combine.subtype!.coefficients[0].length]).toEqual([2, 4, 8, 16]);
    const numbers = [combine.stage1, combine.subtype!].flatMap((h) => [...h.coefficients.flat(), ...h.intercept]);
    expect(numbers.every((v) => Number.isFinite(v))).toBe(true);

    // The central evaluation uses it: final.ensemble is the stacked ensemble, centralMean the mean's.
    expect(run.final.ensemble.ece).not.toBe(fit.centralMean.ece);

    // predict (POST /api/predict) applies it: the ensemble's stage-1 row is the stacked head on the members' (calibrated) rows.
    const image = readFileSync((await readBreakHisTree(data)).images[0].path);
    const predict = async (query: string) => {
      const res = await fetch(`${fed.url}/api/predict?run=${id}${query}`, { method: 'POST', headers: { authorization: `Bearer ${fed.token}`, 'content-type': 'image/png' }, body: image });
      expect(res.status).toBe(200);
      return ((await res.json()) as PredictionReport).images[0].stage1.probabilities;
    };
    const [ensemble, ...memberRows] = await Promise.all(['', '&model=global', '&model=global-r1'].map(predict));
    const row = (p: Record<string, number>) => Float32Array.from([p.benign, p.malignant, ...Array.from({ length: 8 }, () => 1 / 8)]);
    const expected = combineMembers(memberRows.map(row), { numClasses: 2, subtypeParents: BREAKHIS_SUBTYPE_PARENTS }, combine);
    expect(ensemble.benign).toBeCloseTo(expected[0], 4);
    expect(ensemble.malignant).toBeCloseTo(expected[1], 4);

    // evaluate reads the same manifest and combines with it.
    const e = spawnSync(process.execPath, [COORDINATOR_BIN, 'evaluate', '--model', run.final.modelsDir, '--data', data, '--json'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 300_000 });
    expect(e.status).toBe(0);
    const evaluated = JSON.parse(e.stdout) as { kind: string; members: string[]; combine: string; stage1: { imageAccuracy: number } };
    expect(evaluated).toEqual(expect.objectContaining({ kind: 'ensemble', members: ['global', 'global-r1'], combine: 'stacking' }));
    expect(evaluated.stage1.imageAccuracy).toBeGreaterThanOrEqual(0);

    // Each site installs the run's final models with the stacked ensemble (it holds every member).
    await Promise.all(fed.sites.map((s) => s.waitFor((l) => l.msg === 'final models installed' && l.runId === id, 120_000, 'the stacking run\'s final models')));

    // What left each site: one compact outbox line per gradient answered (numbers, hashes and the signature only).
    for (const siteId of ['site-1', 'site-2']) {
      const messages = readFileSync(join(fed.siteStateDir(siteId), 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const answers = messages.filter((m) => m.event === EnsembleFitEvents.stacking && m.payload.runId === id).map((m) => m.payload);
      expect(answers).toHaveLength(fit.stacking.stage1.steps + 1 + fit.stacking.subtype.steps + 1);
      for (const a of answers) {
        expect(Object.keys(a).sort()).toEqual(['ok', 'report', 'runId', 'signature', 'siteId', 'step']);
        expect(Object.keys(a.report).sort()).toEqual(['count', 'gradient', 'head', 'members', 'nll']);
        expect(a.report.members.every((h: string) => /^[0-9a-f]{64}$/.test(h))).toBe(true);
        expect([a.step, a.report.nll, a.report.count, a.report.gradient.numbers, a.report.gradient.maxAbs].every((v) => typeof v === 'number' && Number.isFinite(v))).toBe(true);
      }
      expect(answers.filter((a) => a.report.head === 'subtype')[0].report.gradient.numbers).toBe(8 * 16 + 8);
    }
  });

  // Last too: a run that prunes its SE-CNN (issue 18) before round 2 by the sites' SE gates.
  it('prunes the model by the SE gates the sites report (numbers only), fine-tunes the smaller model and saves it with its shapes', async () => {
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      name: 'e2e-pruning',
      rounds: 2,
      minSites: 2,
      maxSites: 2,
      batchSize: 8,
      model: { kind: 'se-cnn', imageSize: 24, numClasses: 2 },
      personalizeEpochs: 0,
      roundTimeoutSeconds: 300,
      waitForSitesSeconds: 60,
      pruning: { ranking: 'se-gate', steps: [{ round: 2, keep: 0.5 }] },
    });
    // Refused at creation: a model without SE gates, or a step after the last round.
    await expect(fed.admin.request('POST', '/api/runs', { model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 }, pruning: { steps: [{ round: 2, keep: 0.5 }] } })).rejects.toThrow(
      /400.*se-gate ranking prunes the conv channels of se-cnn, attention-cnn; the model is small-cnn/,
    );
    await expect(fed.admin.request('POST', '/api/runs', { rounds: 2, model: { kind: 'se-cnn', imageSize: 24, numClasses: 2 }, pruning: { steps: [{ round: 3, keep: 0.5 }] } })).rejects.toThrow(
      /400.*after the run's last round/,
    );
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const run = await fed.admin.waitForRun<{ status: string; statusReason: string | null; config: { model: { options?: Record<string, number> } }; final: { modelsDir: string } }>(id, 5 * 60_000);
    expect(run).toEqual(expect.objectContaining({ status: 'completed', statusReason: null }));
    const pruned = fed.coordinator.lines.find((l) => l.msg === 'model pruned' && l.runId === id);
    expect(pruned).toEqual(expect.objectContaining({ round: 2, ranking: 'se-gate', sites: ['site-1', 'site-2'], filters: { before: [16, 32, 64], after: expect.any(Array) } }));
    const after = (pruned!.filters as { after: number[] }).after;
    expect(after.every((f, i) => f < [16, 32, 64][i])).toBe(true);
    // The run's model is the pruned one now, round 2 started from it and trained it.
    expect(run.config.model.options).toEqual(expect.objectContaining({ filters1: after[0], filters2: after[1], filters3: after[2] }));
    const rs = await fed.admin.request<Round[]>('GET', `/api/runs/${id}/rounds`);
    const r2 = rs.find((r) => r.round === 2 && r.status === 'completed')!;
    const base = decodeWeights(await fed.admin.bytes(`/api/models/${r2.baseModelHash}`), r2.baseModelHash);
    const trained = decodeWeights(await fed.admin.bytes(`/api/models/${r2.modelHash}`), r2.modelHash);
    expect(base.find((t) => t.name === 'conv3/kernel')?.shape).toEqual([3, 3, after[1], after[2]]);
    expect(maxAbsDifference(base, trained)).toBeGreaterThan(0);
    // The saved global model records the pruned shapes, and evaluate reads the run's saved models.
    const manifest = JSON.parse(readFileSync(join(run.final.modelsDir, 'global', 'histofed-model.json'), 'utf8'));
    expect(manifest.spec.options).toEqual(expect.objectContaining({ filters3: after[2] }));
    const e = spawnSync(process.execPath, [COORDINATOR_BIN, 'evaluate', '--model', join(run.final.modelsDir, 'global'), '--data', data, '--json'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 300_000 });
    expect(e.status).toBe(0);
    expect(JSON.parse(e.stdout)).toEqual(expect.objectContaining({ kind: 'model', images: (await readBreakHisTree(data)).images.length }));
    // What left each site for it: one signed answer of gates per channel and an image count.
    for (const siteId of ['site-1', 'site-2']) {
      const messages = readFileSync(join(fed.siteStateDir(siteId), 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const answers = messages.filter((m) => m.event === 'coordinator:channel-stats' && m.payload.runId === id).map((m) => m.payload);
      expect(answers).toHaveLength(1);
      expect(Object.keys(answers[0]).sort()).toEqual(['gates', 'images', 'ok', 'runId', 'sha256', 'signature', 'siteId']);
      expect(answers[0].gates.map((g: number[]) => g.length)).toEqual([16, 32, 64]);
    }
  });
});
