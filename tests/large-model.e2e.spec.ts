/**
 * A model far larger than one socket message through the real coordinator: 33 M parameters
 * (133 MB of float32) under the coordinator's 8 MiB message limit. The global model travels to a
 * participant in chunks (site:fetch-chunk), its update back in chunks (site:upload-chunk), and the
 * coordinator aggregates, stores and serves it byte-exactly.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WeightSet, decodeWeights, namedTensor, parameterCount } from '@histofed/fl-core';
import { generateSyntheticBreakHis } from '@histofed/data';
import { RECOMMENDED_MAX_MESSAGE_BYTES, TrainTask } from '@histofed/protocol';
import { Federation, RogueSite, startFederation } from '@histofed/harness';

interface Round {
  round: number;
  status: string;
  baseModelHash: string;
  modelHash: string | null;
}

describe('a 33 M-parameter model through the coordinator', () => {
  let work: string;
  let fed: Federation;
  let site: RogueSite;
  const sent: WeightSet[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-large-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 8, patientsPerSubtype: 1, imagesPerPatient: 1 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 0, seed: 8 });
    // The participant answers with the global weights plus 0.25 on every value: a known update.
    site = new RogueSite(fed.url, 'big-site', async (r: RogueSite, task: TrainTask) => {
      const global = r.globals.get(task.modelHash)!;
      const weights = global.map((t) => namedTensor(t.name, t.shape, Float32Array.from(t.values, (v) => v + 0.25)));
      sent.push(weights);
      await r.deliver(`round ${task.config.round}`, r.update(task, { weights }));
    });
    expect((await site.enroll()).status).toBe('approved');
    expect((await site.hello(10)).ok).toBe(true);
  }, 120_000);

  afterAll(async () => {
    site?.close();
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('goes down and up in chunks and comes back aggregated byte-exactly', async () => {
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 1,
      minSites: 1,
      personalizeEpochs: 0,
      model: { kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { width: 16, blocks: 4, denseUnits: 4096 } },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const run = await fed.admin.waitForRun<{ status: string; statusReason: string | null }>(id, 600_000, 1000);
    expect(run).toEqual(expect.objectContaining({ status: 'completed', statusReason: null }));
    expect(site.replies.find((r) => r.what === 'round 1')?.ack).toEqual({ ok: true });
    expect(parameterCount(sent[0])).toBeGreaterThanOrEqual(30_000_000);
    expect(parameterCount(sent[0]) * 4).toBeGreaterThan(10 * RECOMMENDED_MAX_MESSAGE_BYTES);

    const [round] = await fed.admin.request<Round[]>('GET', `/api/runs/${id}/rounds`);
    const aggregated = decodeWeights(await fed.admin.bytes(`/api/models/${round.modelHash}`), 'round 1 model');
    // FedAvg of one site is its update: every value equal to what the site sent.
    let differing = 0;
    aggregated.forEach((t, i) => t.values.forEach((v, j) => (differing += v === sent[0][i].values[j] ? 0 : 1)));
    expect(differing).toBe(0);
  }, 600_000);
});
