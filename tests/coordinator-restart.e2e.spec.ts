import { decodeWeights } from '@histofed/fl-core';
/**
 * All run state lives in the database: a coordinator killed with SIGKILL in the middle of a run
 * resumes it at the last completed round from the same global model, and the sites reconnect by
 * themselves.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSyntheticBreakHis } from '@histofed/data';
import { Federation, startFederation } from '@histofed/harness';

interface Round {
  round: number;
  status: string;
  baseModelHash: string;
  modelHash: string | null;
}

describe('coordinator restart', () => {
  let work: string;
  let fed: Federation;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-restart-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 4, patientsPerSubtype: 2, imagesPerPatient: 4 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 2, seed: 4 });
  });
  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('resumes a run after SIGKILL at the last completed round', async () => {
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 3,
      minSites: 2,
      localEpochs: 2,
      personalizeEpochs: 0,
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 },
      // A server optimizer: its moments must survive the restart too.
      strategy: 'fedadam',
      strategyOptions: { eta: 0.01 },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const rounds = () => fed.admin.request<Round[]>('GET', `/api/runs/${id}/rounds`);
    // Killed as round 2 starts (round 1 is stored by then): a round takes seconds of site training, so
    // the kill lands inside the run however fast the machine (polling the API could miss the window).
    await fed.coordinator.waitFor((l) => l.msg === 'round started' && l.runId === id && l.round === 2, 120_000, 'round 2 to start');
    await fed.restartCoordinator('SIGKILL');
    const resumed = await fed.coordinator.waitFor((l) => l.msg === 'resuming run', 10_000, 'the run to resume');
    expect(resumed).toEqual(expect.objectContaining({ runId: id }));
    expect(resumed.completedRounds).toBe(1);
    const first = (await rounds()).find((r) => r.round === 1);
    expect(first).toEqual(expect.objectContaining({ status: 'completed' }));

    const run = await fed.admin.waitForRun<{
      status: string;
      statusReason: string | null;
      completedRounds: number;
      currentModelHash: string;
      strategyStateHash: string | null;
    }>(id, 180_000);
    expect(run).toEqual(expect.objectContaining({ status: 'completed', completedRounds: 3, statusReason: null }));
    const all = await rounds();
    expect(all.map((r) => [r.round, r.status])).toEqual([
      [1, 'completed'],
      [2, 'completed'],
      [3, 'completed'],
    ]);
    // The chain of models is unbroken across the restart.
    expect(all[0].modelHash).toBe(first?.modelHash);
    expect(all[1].baseModelHash).toBe(all[0].modelHash);
    expect(all[2].baseModelHash).toBe(all[1].modelHash);
    expect(run.currentModelHash).toBe(all[2].modelHash);
    // FedAdam's state (first and second moments of every tensor) is stored like a model.
    expect(run.strategyStateHash).toMatch(/^[0-9a-f]{64}$/);
    const state = decodeWeights(await fed.admin.bytes(`/api/models/${run.strategyStateHash}`), 'strategy state');
    const model = decodeWeights(await fed.admin.bytes(`/api/models/${run.currentModelHash}`), 'model');
    expect(state.map((t) => t.name)).toEqual([...model.map((t) => `m/${t.name}`), ...model.map((t) => `v/${t.name}`)]);
    expect(state.some((t) => t.values.some((v) => v !== 0))).toBe(true);
  });

  it('a site killed while it trains rejoins when restarted, and the run completes', async () => {
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 2,
      minSites: 2,
      localEpochs: 3,
      personalizeEpochs: 0,
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    await fed.sites[1].waitFor((l) => l.msg === 'training started' && l.runId === id, 120_000, 'site-2 to train');
    await fed.restartSite('site-2', 'SIGKILL', 1000);
    const run = await fed.admin.waitForRun<{ status: string; completedRounds: number }>(id, 180_000);
    expect(run).toEqual(expect.objectContaining({ status: 'completed', completedRounds: 2 }));
    // The restarted process reconnected with the same identity and contributed.
    const restarted = fed.sites[1];
    expect(restarted.lines.some((l) => l.msg === 'connected to coordinator')).toBe(true);
    expect(restarted.lines.some((l) => l.msg === 'update accepted' && l.runId === id)).toBe(true);
    const rounds = await fed.admin.request<{ round: number; status: string; participants: string[] }[]>('GET', `/api/runs/${id}/rounds`);
    expect(rounds.every((r) => r.status === 'completed' && r.participants.includes('site-2'))).toBe(true);
  });
});
