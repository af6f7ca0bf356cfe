/**
 * A site SIGKILLed while it trains and restarted takes part again in a later round of the same run
 * (issue 13, "A killed site that does not come back"). The restarted process needs seconds before
 * it can say hello (TensorFlow.js, its data); rounds are shorter than that. Without the gather
 * window (a round waits up to gatherSeconds for approved sites that are not connected) the
 * coordinator started every remaining round with the other sites the moment they were ready, and
 * the run was over before the restarted site was back (bench:chaos: killedSiteRejoined false).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSyntheticBreakHis } from '@histofed/data';
import { Federation, startFederation } from '@histofed/harness';

interface Round {
  round: number;
  status: string;
  participants: string[];
}
interface Contribution {
  siteId: string;
  status: string;
  kind: string;
}

describe('site rejoin', () => {
  let work: string;
  let fed: Federation;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-rejoin-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 5, patientsPerSubtype: 2, imagesPerPatient: 4 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 3, seed: 5 });
  });
  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('a site SIGKILLed during round 2 and restarted contributes to a later round', async () => {
    const victim = 'site-3';
    const rounds = 4;
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds,
      // The other two sites can go on without it: nothing makes the coordinator wait but the gather window.
      minSites: 2,
      maxSites: 3,
      localEpochs: 3,
      personalizeEpochs: 0,
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    await fed.sites[2].waitFor((l) => l.msg === 'training started' && l.runId === id && l.round === 2, 60_000, `${victim} to train round 2`);
    const killedAt = Date.now();
    await fed.restartSite(victim, 'SIGKILL', 1000);

    const run = await fed.admin.waitForRun<{ status: string; statusReason: string | null; completedRounds: number }>(id, 120_000);
    expect(run).toEqual(expect.objectContaining({ status: 'completed', completedRounds: rounds, statusReason: null }));

    // A round after the kill had the restarted site among its participants, and accepted its update.
    const all = await fed.admin.request<Round[]>('GET', `/api/runs/${id}/rounds`);
    const later = all.filter((r) => r.round > 2 && r.status === 'completed' && r.participants.includes(victim)).map((r) => r.round);
    const accepted: number[] = [];
    for (const r of later) {
      const contributions = await fed.admin.request<Contribution[]>('GET', `/api/runs/${id}/rounds/${r}/contributions`);
      if (contributions.some((c) => c.siteId === victim && c.kind === 'round' && c.status === 'accepted')) accepted.push(r);
    }
    const restarted = fed.sites[2];
    const connected = restarted.lines.find((l) => l.msg === 'connected to coordinator');
    expect({ laterRoundsWithAcceptedUpdate: accepted, connectedSecondsAfterKill: connected ? (Date.parse(String(connected.time)) - killedAt) / 1000 : null }).toEqual({
      laterRoundsWithAcceptedUpdate: expect.arrayContaining([expect.any(Number)]),
      connectedSecondsAfterKill: expect.any(Number),
    });
    expect(restarted.lines.some((l) => l.msg === 'update accepted' && l.runId === id && Number(l.round) > 2)).toBe(true);
  });
});
