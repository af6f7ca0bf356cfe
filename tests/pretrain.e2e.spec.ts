/**
 * Issue 19, federated self-supervised pretraining, end to end on real processes: a coordinator
 * (embedded PostgreSQL) and two site clients. A pretrain run trains a tiny small-cnn's encoder on
 * the contrastive objective over every site image and records the encoder's hash; a
 * classification run names it (startFrom) and starts from exactly that encoder, the sites checking
 * it; a run naming a wrong hash, or a classification run, is refused at creation.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelSpec, decodeWeights, encodeWeights, maxAbsDifference, sha256Hex } from '@histofed/fl-core';
import { generateSyntheticBreakHis } from '@histofed/data';
import { encoderHash, encoderWeights } from '@histofed/ml';
import { Federation, startFederation } from '@histofed/harness';

interface Round {
  round: number;
  status: string;
  modelHash: string;
  baseModelHash: string;
  participants: string[];
  siteMetrics: Record<string, number> | null;
  centralMetrics: Record<string, number> | null;
}
interface Run {
  id: string;
  status: string;
  statusReason: string | null;
  currentModelHash: string | null;
  config: { kind: string; personalizeEpochs: number; calibration: unknown; pretrain: Record<string, number> | null };
  final: { global: unknown; encoder?: { sha256: string; parameters: number; tensors: number; contrastiveLoss: number | null } } | null;
}

const model: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { width: 0.5, denseUnits: 8 } };

describe('federated contrastive pretraining across real processes', () => {
  let work: string;
  let fed: Federation;
  let pretrain: Run;
  let pretrainRounds: Round[];

  const weightsOf = async (hash: string) => decodeWeights(await fed.admin.bytes(`/api/models/${hash}`), hash);
  /** The HTTP status and body of a request the coordinator refuses. */
  const refusal = async (body: unknown): Promise<{ status: number; text: string }> => {
    const res = await fetch(`${fed.url}/api/runs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fed.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, text: await res.text() };
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-pretrain-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 7, patientsPerSubtype: 2, imagesPerPatient: 2 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 2, seed: 7 });
    const created = await fed.admin.request<Run>('POST', '/api/runs', {
      name: 'pretrain',
      kind: 'pretrain',
      rounds: 2,
      minSites: 2,
      maxSites: 2,
      localEpochs: 1,
      batchSize: 6,
      learningRate: 0.003,
      model,
      pretrain: { cropSize: 24, pairsPerImage: 1, projectionDim: 8, projectionHidden: 16 },
      roundTimeoutSeconds: 120,
      waitForSitesSeconds: 60,
    });
    // Nothing to calibrate or personalize without labels: both off for a pretrain run.
    expect(created.config).toEqual(expect.objectContaining({ kind: 'pretrain', personalizeEpochs: 0, calibration: null }));
    expect(created.config.pretrain).toEqual({ temperature: 0.5, projectionDim: 8, projectionHidden: 16, cropSize: 24, pairsPerImage: 1 });
    await fed.admin.request('POST', `/api/runs/${created.id}/start`);
    pretrain = await fed.admin.waitForRun<Run>(created.id, 3 * 60_000);
    pretrainRounds = await fed.admin.request<Round[]>('GET', `/api/runs/${created.id}/rounds`);
  });

  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('completes, records the sites\' contrastive loss per round and the encoder\'s content hash', async () => {
    expect(pretrain).toEqual(expect.objectContaining({ status: 'completed', statusReason: null }));
    expect(pretrainRounds.map((r) => [r.round, r.status, r.participants])).toEqual([
      [1, 'completed', ['site-1', 'site-2']],
      [2, 'completed', ['site-1', 'site-2']],
    ]);
    for (const r of pretrainRounds) {
      expect(r.centralMetrics).toBeNull();
      expect(Number.isFinite(r.siteMetrics?.['loss'])).toBe(true);
      expect(r.siteMetrics?.['loss']).toBeGreaterThan(0);
    }
    const encoder = pretrain.final?.encoder;
    expect(encoder?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(encoder?.contrastiveLoss).toBeCloseTo(pretrainRounds[1].siteMetrics!['loss'], 6);
    // The encoder is the final global model (encoder + projection head) without its projection head, stored under its hash.
    const global = await weightsOf(pretrain.currentModelHash!);
    expect(global.some((t) => t.name.startsWith('proj2/'))).toBe(true);
    const stored = await fed.admin.bytes(`/api/models/${encoder!.sha256}`);
    expect(sha256Hex(stored)).toBe(encoder!.sha256);
    expect(encoderHash(model, global)).toBe(encoder!.sha256);
    expect(decodeWeights(stored).length).toBe(encoder!.tensors);
    // The rounds trained it: the encoder moved from the initial model's.
    expect(maxAbsDifference(encoderWeights(model, global), encoderWeights(model, await weightsOf(pretrainRounds[0].baseModelHash)))).toBeGreaterThan(1e-6);
    for (const site of fed.sites) {
      const done = await site.waitFor((l) => l.msg === 'pretraining finished' && l.round === 2, 10_000, 'the last pretraining round');
      expect((done.metrics as Record<string, number>)['images']).toBeGreaterThan(1);
    }
    const metrics = await fed.admin.request<{ models: { id: string; hash: string }[] }>('GET', `/api/runs/${pretrain.id}/metrics`);
    expect(metrics.models).toEqual(expect.arrayContaining([expect.objectContaining({ id: 'encoder', hash: encoder!.sha256 })]));
  });

  it('starts a classification run from exactly that encoder (fresh heads), the sites checking its hash; refuses a wrong hash or a classification run', async () => {
    const sha256 = pretrain.final!.encoder!.sha256;
    const classify = { ...model, subtypeParents: [0, 0, 0, 0, 1, 1, 1, 1], options: { ...model.options, denseUnits: 12 } };
    const base = { rounds: 1, minSites: 2, maxSites: 2, localEpochs: 1, batchSize: 8, model: classify, personalizeEpochs: 0, calibration: null, roundTimeoutSeconds: 120, waitForSitesSeconds: 60 };

    const wrong = await refusal({ ...base, startFrom: { run: pretrain.id, sha256: 'f'.repeat(64) } });
    expect(wrong.status).toBe(400);
    expect(wrong.text).toContain('startFrom.sha256');
    expect(wrong.text).toContain(sha256);
    const otherModel = await refusal({ ...base, model: { ...classify, options: { width: 1 } }, startFrom: { run: pretrain.id, sha256 } });
    expect(otherModel.status).toBe(400);
    expect(otherModel.text).toMatch(/filters/);

    const created = await fed.admin.request<Run>('POST', '/api/runs', { ...base, name: 'from-encoder', startFrom: { run: pretrain.id, sha256 } });
    const namingClassification = await refusal({ ...base, startFrom: { run: created.id, sha256 } });
    expect(namingClassification.status).toBe(400);
    expect(namingClassification.text).toContain('startFrom.run');
    expect(namingClassification.text).toContain('classification run');

    await fed.admin.request('POST', `/api/runs/${created.id}/start`);
    const done = await fed.admin.waitForRun<Run>(created.id, 3 * 60_000);
    expect(done).toEqual(expect.objectContaining({ status: 'completed', statusReason: null }));
    const [round] = await fed.admin.request<Round[]>('GET', `/api/runs/${created.id}/rounds`);
    const initial = await weightsOf(round.baseModelHash);
    // The encoder tensors are the pretrained ones, bit for bit; the heads are the classifier's own.
    const pretrained = decodeWeights(await fed.admin.bytes(`/api/models/${sha256}`));
    expect(encoderWeights(classify, initial).map((t) => t.name)).toEqual(pretrained.map((t) => t.name));
    expect(maxAbsDifference(encoderWeights(classify, initial), pretrained)).toBe(0);
    expect(sha256Hex(encodeWeights(encoderWeights(classify, initial)))).toBe(sha256);
    expect(initial.find((t) => t.name === 'fc1/kernel')?.shape).toEqual([32, 12]);
    expect(initial.some((t) => t.name.startsWith('subtype_head/'))).toBe(true);
    for (const site of fed.sites) {
      const checked = await site.waitFor((l) => l.msg === 'pretrained encoder checked' && l.runId === created.id, 10_000, 'the encoder check');
      expect(checked.sha256).toBe(sha256);
    }
  });
});
