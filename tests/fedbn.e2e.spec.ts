/**
 * FedBN + CORAL + a federated stain target over real processes (issue 14). FedBN: the run keeps batch-norm tensors at the sites. The
 * coordinator's global model keeps its batch-norm tensors exactly as they started while the shared
 * tensors are aggregated; each site stores its own (state dir), trains later rounds from them, also
 * after it was restarted, and the central evaluation and the saved ensemble use the global model
 * with each site's local tensors. A coordinator crash mid-run resumes with the stored stain target
 * and alignment reference.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeWeights, isLocalTensor } from '@histofed/fl-core';
import { generateSyntheticBreakHis } from '@histofed/data';
import { readModelReading } from '@histofed/ml';
import { Federation, startFederation } from '@histofed/harness';

interface Round {
  round: number;
  status: string;
  baseModelHash: string;
  modelHash: string | null;
  centralMetrics: Record<string, number> | null;
  siteMetrics: Record<string, number> | null;
}

describe('FedBN: local batch-norm tensors', () => {
  let work: string;
  let fed: Federation;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-fedbn-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 6, patientsPerSubtype: 2, imagesPerPatient: 4 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 2, seed: 6, auditPlaintext: true });
  });
  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('aggregates only shared tensors, and every site keeps, reloads and is evaluated with its own', async () => {
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      // minSites 2 of 2: every round after the restart waits for the restarted site; enough rounds
      // remain after round 1 however fast they go.
      rounds: 5,
      minSites: 2,
      localEpochs: 2,
      personalizeEpochs: 1,
      localTensors: 'batch-norm',
      federatedStainTarget: 'macenko',
      alignment: { method: 'coral', lambda: 1 },
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2, options: { batchNorm: 1 } },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    // Restart a site between rounds: its local tensors come back from its state directory.
    await fed.admin.poll(
      async () => ((await fed.admin.request<{ completedRounds: number }>('GET', `/api/runs/${id}`)).completedRounds >= 1 ? true : undefined),
      180_000,
      'round 1',
    );
    await fed.restartSite('site-2', 'SIGTERM', 500);
    // Then the coordinator crashes as round 3 starts: it resumes with the alignment reference that
    // rounds 1-2 built (stored with the run's progress), not with a round that has none.
    const first = fed.coordinator;
    await first.waitFor((l) => l.msg === 'round started' && l.runId === id && l.round === 3, 180_000, 'round 3 to start');
    const built = first.lines.filter((l) => l.msg === 'alignment reference updated' && l.runId === id).at(-1);
    expect(built).toEqual(expect.objectContaining({ round: 2, dim: 64 }));
    await fed.restartCoordinator('SIGKILL');
    const restored = await fed.coordinator.waitFor((l) => l.msg === 'alignment reference restored', 30_000, 'the alignment reference');
    expect(restored).toEqual(expect.objectContaining({ runId: id, count: built?.count, dim: 64 }));
    const run = await fed.admin.waitForRun<{
      status: string;
      statusReason: string | null;
      final: {
        ensembleMembers: string[];
        global: Record<string, number> | null;
        modelsDir: string;
        calibration: { global: { temperature: { stage1: number }; eceBefore: number; eceAfter: number; reliabilityAfter: { count: number }[]; perSite: Record<string, { eceBefore: number; eceAfter: number }> }; personalized: Record<string, { temperature: { stage1: number } }>; sites: { answered: string[] } };
        review: { measure: string; targetReviewRate: number; global: { threshold: number; images: number; reviewRate: number; accuracyAll: number; accuracyUnflagged: number | null } };
      };
    }>(id, 300_000);
    expect([run.status, run.statusReason]).toEqual(['completed', null]);

    // The sites agreed on a stain target before round 1 (numbers only, signed, in their outboxes).
    const stored = await fed.admin.request<{ config: { stainNormalization: { method: string; stainMatrix: number[][]; maxConcentrations: number[] } | null } }>('GET', `/api/runs/${id}`);
    expect(stored.config.stainNormalization).toMatchObject({ method: 'macenko', stainMatrix: [expect.any(Array), expect.any(Array)], maxConcentrations: [expect.any(Number), expect.any(Number)] });
    expect(first.lines.some((l) => l.msg === 'federated stain target agreed' && (l.sites as unknown[]).length === 2)).toBe(true);
    // Agreed once: the resumed run keeps the stored target.
    expect(fed.coordinator.lines.some((l) => l.msg === 'asking for stain statistics')).toBe(false);
    for (const siteId of ['site-1', 'site-2']) {
      const outbox = readFileSync(join(fed.siteStateDir(siteId), 'outbox', 'messages.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const sent = outbox.filter((m) => m.event === 'coordinator:stain-stats');
      expect(sent).toHaveLength(1);
      expect(Object.keys(sent[0].payload).sort()).toEqual(['images', 'ok', 'runId', 'signature', 'siteId', 'stats']);
      expect(JSON.stringify(sent[0].payload.stats)).toMatch(/^\{"method":"macenko","stainMatrix":\[\[[-0-9.e,]+\],\[[-0-9.e,]+\]\],"maxConcentrations":\[[-0-9.e,]+\]\}$/);
    }

    const rounds = await fed.admin.request<Round[]>('GET', `/api/runs/${id}/rounds`);
    expect(rounds.map((r) => r.status)).toEqual(['completed', 'completed', 'completed', 'completed', 'completed']);
    const model = async (hash: string) => decodeWeights(await fed.admin.bytes(`/api/models/${hash}`));
    const initial = await model(rounds[0].baseModelHash);
    const final = await model(rounds[4].modelHash!);
    let shared = 0;
    for (const [i, t] of final.entries()) {
      expect(t.name).toBe(initial[i].name);
      if (isLocalTensor(t.name, 'batch-norm')) {
        expect([t.name, Buffer.from(t.values.buffer, t.values.byteOffset, t.values.byteLength).equals(Buffer.from(initial[i].values.buffer, initial[i].values.byteOffset, initial[i].values.byteLength))]).toEqual([t.name, true]);
      } else if (t.values.some((v, j) => v !== initial[i].values[j])) {
        shared++;
      }
    }
    expect(shared).toBeGreaterThan(0);

    // Each site's own batch-norm tensors, stored in its state directory, are not the global ones.
    for (const siteId of ['site-1', 'site-2']) {
      const file = join(fed.siteStateDir(siteId), 'local-tensors', `${id}.hfw`);
      expect(existsSync(file)).toBe(true);
      const own = decodeWeights(new Uint8Array(readFileSync(file)));
      expect(own.map((t) => t.name).every((n) => isLocalTensor(n, 'batch-norm'))).toBe(true);
      const gamma = own.find((t) => t.name === 'bn1/gamma')!;
      const globalGamma = final.find((t) => t.name === 'bn1/gamma')!;
      expect(Array.from(gamma.values)).not.toEqual(Array.from(globalGamma.values));
    }
    const site = (siteId: string, n: number) => fed.sites.find((s) => s.name === siteId)!.lines.filter((l) => l.msg === 'training from own local tensors').length >= n;
    expect(site('site-1', 2)).toBe(true); // rounds 2 and 3 (and the personalization)
    expect(site('site-2', 1)).toBe(true); // the restarted process, from its state directory

    // CORAL: round 1 reports moments only; later rounds train toward the combined moments.
    expect(rounds[0].siteMetrics?.['alignmentLoss']).toBeUndefined();
    expect(rounds[1].siteMetrics?.['alignmentLoss']).toBeGreaterThanOrEqual(0);
    expect(first.lines.filter((l) => l.msg === 'alignment reference updated').length).toBe(2);
    expect(fed.coordinator.lines.filter((l) => l.msg === 'alignment reference updated').length).toBe(3);
    // What left each site with its updates: weights and, in the header, counts and moments only.
    for (const siteId of ['site-1', 'site-2']) {
      // The files the log lists (a file whose log line is missing was cut short by the SIGTERM: never sent).
      const outbox = join(fed.siteStateDir(siteId), 'outbox');
      const logged = readFileSync(join(outbox, 'messages.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const updates = logged.filter((m) => m.event === 'site:update').map((m) => m.plaintext as { file: string; sha256: string });
      expect(updates.length).toBeGreaterThanOrEqual(3);
      for (const { file, sha256 } of updates) {
        const bytes = readFileSync(join(outbox, file));
        expect(createHash('sha256').update(bytes).digest('hex')).toBe(sha256);
        const header = JSON.parse(bytes.subarray(4, 4 + bytes.readUInt32LE(0)).toString('utf8'));
        expect(Object.keys(header).sort()).toEqual(['baseModelHash', 'featureMoments', 'kind', 'metrics', 'numSamples', 'round', 'runId', 'siteId']);
        expect(Object.keys(header.featureMoments).sort()).toEqual(['count', 'dim', 'mean', 'secondMoment']);
        expect(header.featureMoments.dim).toBe(64);
        expect(header.featureMoments.mean).toHaveLength(64);
        expect(header.featureMoments.secondMoment).toHaveLength(64 * 64);
        expect(header.featureMoments.count).toBeLessThanOrEqual(header.numSamples);
      }
    }

    // Calibration (issue 15), fitted with the sites after the last round (on by default): the
    // global model's temperature from both sites' NLL sums, measured on the central test set (ECE
    // before and after), each personalized model's from its own site's; the review threshold on
    // the pooled validation images. The saved manifests carry both, the ensemble the global rule.
    const fitted = run.final.calibration;
    expect(fitted.sites.answered).toEqual(['site-1', 'site-2']);
    expect(fitted.global.temperature.stage1).toBeGreaterThan(0);
    expect([typeof fitted.global.eceBefore, typeof fitted.global.eceAfter]).toEqual(['number', 'number']);
    expect(fitted.global.reliabilityAfter.reduce((n, b) => n + b.count, 0)).toBeGreaterThan(0);
    expect(Object.keys(fitted.global.perSite).sort()).toEqual(['site-1', 'site-2']);
    expect(Object.keys(fitted.personalized).sort()).toEqual(['site-1', 'site-2']);
    expect(run.final.review).toEqual(expect.objectContaining({ measure: 'entropy', targetReviewRate: 0.2, global: expect.objectContaining({ threshold: expect.any(Number) }) }));
    expect(run.final.review.global.images).toBeGreaterThan(0);
    for (const member of ['global@site-1', 'global@site-2', 'site-1', 'site-2']) {
      const reading = await readModelReading(join(run.final.modelsDir, member));
      expect(reading.calibration).toEqual(expect.objectContaining({ method: 'temperature', stage1: member.startsWith('global') ? fitted.global.temperature.stage1 : fitted.personalized[member].temperature.stage1 }));
      expect(reading.review).toEqual(expect.objectContaining({ measure: 'entropy', targetReviewRate: 0.2 }));
    }
    expect((await readModelReading(join(run.final.modelsDir, 'global@site-1'))).review?.threshold).toBe(run.final.review.global.threshold);
    const ensembleReading = await readModelReading(run.final.modelsDir);
    expect(ensembleReading).toEqual({ calibration: expect.objectContaining({ stage1: 1 }), review: expect.objectContaining({ threshold: run.final.review.global.threshold }) });
    // What left each site for it: two signed answers of numbers (plus ids, model hashes, the signature).
    for (const siteId of ['site-1', 'site-2']) {
      const outbox = readFileSync(join(fed.siteStateDir(siteId), 'outbox', 'messages.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const answers = outbox.filter((m) => m.event === 'coordinator:calibration-nll' || m.event === 'coordinator:calibration-review');
      expect(answers.map((m) => m.event)).toEqual(['coordinator:calibration-nll', 'coordinator:calibration-review']);
      for (const { payload } of answers) {
        expect(Object.keys(payload).sort()).toEqual(['models', 'ok', 'runId', 'signature', 'siteId']);
        expect(payload.models.map((m: { id: string }) => m.id)).toEqual(['global', 'personalized']);
        for (const m of payload.models) {
          const { id, sha256, ...numbers } = m;
          expect([id, sha256]).toEqual([expect.stringMatching(/^(global|personalized)$/), expect.stringMatching(/^[0-9a-f]{64}$/)]);
          // Every remaining leaf is a number.
          expect(JSON.stringify(numbers)).toMatch(/^[{}[\]":,a-zA-Z0-9.e+-]*$/);
          expect(JSON.stringify(numbers).replace(/"[a-zA-Z0-9]+":/g, '')).toMatch(/^[{}[\],0-9.e+-]*$/);
        }
      }
    }

    // The central evaluation is the ensemble of the global model with each site's local tensors.
    expect(run.final.ensembleMembers).toEqual(['global@site-1', 'global@site-2', 'site-1', 'site-2']);
    expect(run.final.global).not.toBeNull();
    expect(rounds.every((r) => r.centralMetrics !== null)).toBe(true);
  });
});
