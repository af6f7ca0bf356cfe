/**
 * The flood phase of bench:chaos: the real sites train a second run while an unauthenticated
 * flood (unauthenticated-flood.ts) comes from another loopback address. Measures the coordinator's
 * RSS before, under and after the flood, whether rounds kept completing and contributions kept
 * being accepted during it, and whether anything stored before it changed.
 */
import { isDeepStrictEqual } from 'node:util';
import { Federation } from '@histofed/harness';
import { RssSampler, UnauthenticatedFlood, FloodReport } from './unauthenticated-flood';

export interface FloodPhaseOptions {
  readonly seconds: number;
  readonly connections: number;
  readonly address: string;
  readonly rounds: number;
}

interface RoundView {
  round: number;
  status: string;
  participants: string[];
  completedAt: string | null;
}
interface ContributionView {
  siteId: string;
  status: string;
  receivedAt: string;
}

export interface FloodResult {
  attackerAddress: string;
  floodSeconds: number;
  attackers: FloodReport;
  /** Coordinator RSS (MiB): peaks of each phase; `afterLast` is the last sample ~10 s after the flood stopped. */
  rssMiB: { idle: number | null; trainingBeforeFlood: number | null; underFlood: number | null; afterFlood: number | null; afterLast: number | null };
  /** Peak under the flood minus the peak while the sites trained before it. */
  rssGrowthUnderFloodMiB: number | null;
  floodRun: { status: string; roundsCompleted: number; rounds: number };
  roundsCompletedDuringFlood: number;
  contributionsAcceptedDuringFlood: number;
  sitesContributingDuringFlood: string[];
  contributionsRejectedDuringFlood: number;
  realSitesKeptTraining: boolean;
  coordinatorSurvived: boolean;
  coordinatorErrorLinesDuringFlood: number;
  /** Sites (without lastSeenAt) and the chaos run with its rounds and contributions, before vs after. */
  storedUnchanged: boolean;
  storedDifferences: string[];
  sitesBefore: number;
  sitesAfter: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the flood must not change: the site registry and everything of a finished run. */
async function storedState(fed: Federation, runId: string) {
  const sites = (await fed.admin.request<Record<string, unknown>[]>('GET', '/api/sites'))
    .map((s) => {
      const copy: Record<string, unknown> = { ...s };
      // lastSeenAt moves with every hello, `connected` is not stored.
      delete copy.lastSeenAt;
      delete copy.connected;
      return copy;
    })
    .sort((a, b) => String(a.siteId).localeCompare(String(b.siteId)));
  const run = await fed.admin.request<Record<string, unknown>>('GET', `/api/runs/${runId}`);
  const rounds = await fed.admin.request<RoundView[]>('GET', `/api/runs/${runId}/rounds`);
  const contributions = [];
  for (const r of rounds) contributions.push(await fed.admin.request<unknown[]>('GET', `/api/runs/${runId}/rounds/${r.round}/contributions`));
  return { sites, run, rounds, contributions };
}

export async function floodPhase(fed: Federation, chaosRunId: string, o: FloodPhaseOptions, say: (s: string) => void): Promise<FloodResult> {
  const before = await storedState(fed, chaosRunId);
  const sampler = new RssSampler(() => fed.coordinator.child.pid);
  const coordinator = fed.coordinator;
  try {
    sampler.setPhase('idle');
    await sleep(2000);
    const { id: runId } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      name: 'flood',
      rounds: o.rounds,
      minSites: 3,
      maxSites: fed.siteIds.length,
      localEpochs: 12,
      batchSize: 8,
      personalizeEpochs: 0,
      roundTimeoutSeconds: 120,
      waitForSitesSeconds: 120,
      // The rogue of the chaos run is approved but gone: do not wait for it each round.
      gatherSeconds: 0,
      model: { kind: 'small-cnn', imageSize: 48, numClasses: 2 },
      secureAggregation: { stageTimeoutSeconds: 15 },
    });
    await fed.admin.request('POST', `/api/runs/${runId}/start`);
    await fed.sites[0].waitFor((l) => l.msg === 'training started' && l.runId === runId, 120_000, 'the flood run to train');
    sampler.setPhase('before');
    await sleep(5000);

    say(`flood: ${o.connections} connections that never say hello from ${o.address} (every 10th with half-open binary packets), bad enrollments and junk HTTP, for ${o.seconds} s`);
    const linesBefore = coordinator.lines.length;
    const flood = new UnauthenticatedFlood({
      url: fed.url,
      localAddress: o.address,
      connections: o.connections,
      halfOpenEvery: 10,
      attachmentBytes: 7.5 * 2 ** 20,
      enrollRequests: 200,
      junkRequests: 200,
      httpConcurrency: 20,
    });
    const floodStart = Date.now();
    sampler.setPhase('flood');
    flood.start();
    await sleep(o.seconds * 1000);
    const attackers = await flood.stop();
    await sampler.sample();
    const floodEnd = Date.now();
    sampler.setPhase('after');
    const errorLines = coordinator.lines.slice(linesBefore).filter((l) => l.level === 'error').length;
    say(
      `flood over: ${attackers.socketAttempts} connection attempts, ${attackers.socketOpened} opened (at most ${attackers.socketPeakOpen} at once), ` +
        `${attackers.socketRefused} refused, ${attackers.socketClosedByServer} closed by the coordinator; ${attackers.halfOpenPackets} half-open packets ` +
        `(${attackers.attachmentMiBSent} MiB of attachment frames); enroll ${JSON.stringify(attackers.enrollStatuses)}; junk ${JSON.stringify(attackers.junkStatuses)}`,
    );
    await sleep(10_000);
    await sampler.sample();

    const run = await fed.admin.waitForRun<{ status: string; completedRounds: number }>(runId, 300_000, 1000);
    const rounds = await fed.admin.request<RoundView[]>('GET', `/api/runs/${runId}/rounds`);
    const during = (iso: string | null) => iso !== null && Date.parse(iso) >= floodStart && Date.parse(iso) <= floodEnd;
    const contributions: ContributionView[] = [];
    for (const r of rounds) contributions.push(...(await fed.admin.request<ContributionView[]>('GET', `/api/runs/${runId}/rounds/${r.round}/contributions`)));
    const acceptedDuring = contributions.filter((c) => c.status === 'accepted' && during(c.receivedAt));
    const roundsDuring = rounds.filter((r) => r.status === 'completed' && during(r.completedAt)).length;

    const after = await storedState(fed, chaosRunId);
    const differences = (['sites', 'run', 'rounds', 'contributions'] as const).filter((k) => !isDeepStrictEqual(before[k], after[k]));
    const peaks = sampler.peaks;
    const result: FloodResult = {
      attackerAddress: o.address,
      floodSeconds: o.seconds,
      attackers,
      rssMiB: {
        idle: peaks.idle ?? null,
        trainingBeforeFlood: peaks.before ?? null,
        underFlood: peaks.flood ?? null,
        afterFlood: peaks.after ?? null,
        afterLast: sampler.last.after ?? null,
      },
      rssGrowthUnderFloodMiB: peaks.flood !== undefined && peaks.before !== undefined ? peaks.flood - peaks.before : null,
      floodRun: { status: run.status, roundsCompleted: run.completedRounds, rounds: o.rounds },
      roundsCompletedDuringFlood: roundsDuring,
      contributionsAcceptedDuringFlood: acceptedDuring.length,
      sitesContributingDuringFlood: [...new Set(acceptedDuring.map((c) => c.siteId))].sort(),
      contributionsRejectedDuringFlood: contributions.filter((c) => c.status !== 'accepted' && during(c.receivedAt)).length,
      realSitesKeptTraining: roundsDuring > 0 && acceptedDuring.length > 0,
      coordinatorSurvived: fed.coordinator === coordinator && coordinator.child.exitCode === null && coordinator.child.signalCode === null,
      coordinatorErrorLinesDuringFlood: errorLines,
      storedUnchanged: differences.length === 0,
      storedDifferences: differences,
      sitesBefore: before.sites.length,
      sitesAfter: after.sites.length,
    };
    say(
      `flood: coordinator RSS peak ${result.rssMiB.trainingBeforeFlood} MiB training before, ${result.rssMiB.underFlood} MiB under the flood, ` +
        `${result.rssMiB.afterLast} MiB 10 s after; rounds completed during the flood ${roundsDuring}, contributions accepted ${acceptedDuring.length} ` +
        `(from ${result.sitesContributingDuringFlood.join(', ')}); flood run ${run.status} ${run.completedRounds}/${o.rounds}; ` +
        `stored state ${result.storedUnchanged ? 'unchanged' : `CHANGED (${differences.join(', ')})`} (sites ${result.sitesBefore} -> ${result.sitesAfter})`,
    );
    return result;
  } finally {
    sampler.stop();
  }
}
