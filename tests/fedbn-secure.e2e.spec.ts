/**
 * FedBN under secure aggregation, over real processes (issue 14): the sites mask only the shared
 * tensors, so their batch-norm tensors never leave them; the global model's batch-norm tensors stay
 * exactly as they started while the shared ones move.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeWeights, isLocalTensor } from '@histofed/fl-core';
import { generateSyntheticBreakHis } from '@histofed/data';
import { Federation, startFederation } from '@histofed/harness';

describe('FedBN with secure aggregation', () => {
  let work: string;
  let fed: Federation;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-fedbn-secure-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 8, patientsPerSubtype: 2, imagesPerPatient: 3 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 3, seed: 8, auditPlaintext: true });
  });
  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('masks only the shared tensors: local batch-norm tensors stay at the sites and out of the aggregate', async () => {
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 2,
      minSites: 3,
      localEpochs: 1,
      personalizeEpochs: 0,
      secureAggregation: {},
      localTensors: 'batch-norm',
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2, options: { batchNorm: 1 } },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const run = await fed.admin.waitForRun(id, 300_000);
    expect([run.status, run.statusReason]).toEqual(['completed', null]);

    const rounds = await fed.admin.request<{ baseModelHash: string; modelHash: string }[]>('GET', `/api/runs/${id}/rounds`);
    const model = async (hash: string) => decodeWeights(await fed.admin.bytes(`/api/models/${hash}`));
    const initial = await model(rounds[0].baseModelHash);
    const final = await model(rounds[1].modelHash);
    let sharedValues = 0;
    let moved = 0;
    for (const [i, t] of final.entries()) {
      if (isLocalTensor(t.name, 'batch-norm')) {
        expect([t.name, Array.from(t.values)]).toEqual([t.name, Array.from(initial[i].values)]);
      } else {
        sharedValues += t.values.length;
        if (t.values.some((v, j) => v !== initial[i].values[j])) moved++;
      }
    }
    expect(moved).toBeGreaterThan(0);

    // What each site sent: a masked input of exactly the shared tensors (4 bytes per value), no weights.
    for (const siteId of ['site-1', 'site-2', 'site-3']) {
      const outbox = join(fed.siteStateDir(siteId), 'outbox');
      const updates = readdirSync(outbox).filter((f) => f.endsWith('site_update.plaintext.bin'));
      expect(updates).toHaveLength(2);
      for (const file of updates) {
        const bytes = readFileSync(join(outbox, file));
        const headerLength = bytes.readUInt32LE(0);
        const header = JSON.parse(bytes.subarray(4, 4 + headerLength).toString('utf8'));
        expect(header.masked).toBe(true);
        expect(bytes.length - 4 - headerLength).toBe(4 * sharedValues);
      }
      expect(readdirSync(join(fed.siteStateDir(siteId), 'local-tensors'))).toEqual([`${id}.hfw`]);
    }
  });
});
