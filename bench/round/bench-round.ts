/**
 * npm run bench:round [-- --sites 50 --params 5000000 --rounds 3 --strategy fedavg --secure-aggregation both --json]
 *
 * The coordinator's cost of a federated round (issue 6). Starts a real coordinator process
 * (embedded PGlite, sites auto-approved, no central test data) and N lightweight simulated sites
 * in this process (socket.io clients speaking the real protocol: enrollment, signed hello, the
 * model fetched in chunks, each task answered with a signed, sealed update uploaded in chunks =
 * received global weights + small noise; with secure aggregation the real SecAgg+ stages and a
 * masked update). Creates a run of a small-cnn sized to about --params parameters through the
 * admin REST API, once with sealed updates and once with secure aggregation (--secure-aggregation
 * both, the default), and reports for each:
 *
 * - coordinator overhead per round: from the last site's update ack of round r to the first site
 *   receiving round r+1's first message (the task; with secure aggregation the key advertisement
 *   request), seconds, median over rounds. It covers (unmasking,) storing the model and starting
 *   the next round; the simulated sites' own work (decode, noise, mask, seal) happens before,
 *   serialized in this process, and is not included. Work the coordinator does synchronously
 *   before its ack leaves (the last update's acceptance resolves the round, and FedAvg or a robust
 *   aggregator runs in the same turn of the event loop) is not included either, hence:
 * - from the last update: from the moment the last site sent its update message (its sealed bytes
 *   already uploaded) to the first site receiving round r+1's first message, seconds, median over
 *   rounds: "from the last contribution received to the next round's weights sent", including
 *   verifying, opening, checking and storing that update and the aggregation.
 * - the coordinator process's CPU seconds per round (user + system, /proc), and what secure
 *   aggregation adds to it (secureAggregationCpuRatio) and to the overhead.
 * - bytes on the wire per site per round, measured at the client's Engine.IO packets (JSON text
 *   packets + binary attachments, not WebSocket framing), divided by the raw float32 model size
 *   (4 x parameters): download (task + model chunks) and upload (update chunks) ratios, medians.
 *
 * Progress goes to stderr with --json; stdout gets one JSON line.
 */
import { Command, Option } from 'commander';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { STRATEGY_NAMES } from '@histofed/aggregation';
import { median, reporter, round } from '../lib/bench-output';
import { adminRequest, startCoordinator } from './coordinator-process';
import { SimSite } from './sim-site';

interface Options {
  sites: string;
  params: string;
  rounds: string;
  strategy: string;
  noise: string;
  secureAggregation: 'off' | 'on' | 'both';
  keep?: boolean;
  json?: boolean;
}

interface SmallCnnSize {
  blocks: number;
  width: number;
  denseUnits: number;
  parameters: number;
}

/** Parameters of libs/ml's small-cnn (3x3 'same' convolutions with bias, gap, fc1, 2-class head). */
export function smallCnnParameters(blocks: number, width: number, denseUnits: number, numClasses = 2): number {
  const filters = [16, 32, 64, 128].slice(0, blocks).map((f) => Math.max(1, Math.round(f * width)));
  let n = 0;
  let inChannels = 3;
  for (const f of filters) {
    n += 9 * inChannels * f + f;
    inChannels = f;
  }
  return n + inChannels * denseUnits + denseUnits + denseUnits * numClasses + numClasses;
}

/** The small-cnn options (width in 1/16 steps up to 16, denseUnits up to 4096) closest to `target` parameters. */
export function sizeSmallCnn(target: number): SmallCnnSize {
  let best: SmallCnnSize = { blocks: 3, width: 1, denseUnits: 64, parameters: smallCnnParameters(3, 1, 64) };
  for (const blocks of [3, 4]) {
    for (let w16 = 1; w16 <= 256; w16++) {
      const width = w16 / 16;
      const convOnly = smallCnnParameters(blocks, width, 0);
      const last = Math.max(1, Math.round([16, 32, 64, 128][blocks - 1] * width));
      // parameters grow linearly in denseUnits: convOnly + D * (last + 1 + 2)
      const d = Math.min(4096, Math.max(1, Math.round((target - convOnly) / (last + 3))));
      const parameters = smallCnnParameters(blocks, width, d);
      if (Math.abs(parameters - target) < Math.abs(best.parameters - target)) best = { blocks, width, denseUnits: d, parameters };
    }
  }
  return best;
}

interface RunRecord {
  id: string;
  status: string;
  statusReason?: string | null;
}

interface RoundRecord {
  round: number;
  status: string;
  participants: string[];
}

interface Measured {
  parameters: number;
  overheadSeconds: number[];
  /** From the last update message sent to the next round's first message, per round. */
  fromLastUpdateSeconds: number[];
  /** Coordinator CPU seconds (user + system) per round, from the run's start to its end. */
  coordinatorCpuSecondsPerRound: number;
  /** Wall seconds from a round's first message to the next round's first message, per round. */
  roundSeconds: number[];
  downloadRatio: number;
  uploadRatio: number;
  wallSeconds: number;
}

/** User + system CPU seconds of a process so far (Linux /proc; null elsewhere). */
async function cpuSeconds(pid: number | undefined): Promise<number | null> {
  if (pid === undefined) return null;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return null;
  }
}

/** One federated run against a fresh coordinator, with or without secure aggregation. */
async function measure(o: Options, size: SmallCnnSize, secure: boolean, say: (s: string) => void): Promise<Measured> {
  const sites = Number(o.sites);
  const rounds = Number(o.rounds);
  const noise = Number(o.noise);
  const model = {
    kind: 'small-cnn',
    imageSize: 32,
    numClasses: 2,
    options: { width: size.width, blocks: size.blocks, denseUnits: size.denseUnits, dropout: 0 },
  };
  const rawBytes = 4 * size.parameters;
  const maxMessageBytes = Math.max(256 * 1024 * 1024, Math.ceil(rawBytes * 1.25) + 1024 * 1024);
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'histofed-bench-round-'));
  const token = randomBytes(24).toString('hex');
  const wallStart = performance.now();
  const label = secure ? 'secure aggregation' : 'sealed updates';
  say(`[${label}] starting the coordinator (work dir ${workDir})`);
  const coordinator = await startCoordinator({
    dataDir: path.join(workDir, 'coordinator'),
    logFile: path.join(workDir, 'coordinator.log'),
    token,
    maxModelBytes: maxMessageBytes,
  });
  const simSites: SimSite[] = [];
  let failed = true;
  try {
    const ids = Array.from({ length: sites }, (_, i) => `bench-site-${i + 1}`);
    for (const id of ids) simSites.push(new SimSite(coordinator.url, id, noise, maxMessageBytes));
    await Promise.all(simSites.map((s) => s.hello(100)));
    say(`[${label}] ${sites} simulated sites connected`);

    const run = await adminRequest<RunRecord>(coordinator.url, token, 'POST', '/api/runs', {
      name: `bench-round ${sites} sites ${size.parameters} params ${o.strategy}${secure ? ' secure' : ''}`,
      model,
      strategy: o.strategy,
      rounds,
      minSites: sites,
      maxSites: sites,
      personalizeEpochs: 0,
      // Simulated sites hold no validation images: no end-of-run calibration (it would wait for their answers).
      calibration: null,
      localEpochs: 1,
      roundTimeoutSeconds: 3600,
      waitForSitesSeconds: 120,
      maxUpdateNorm: 0,
      classWeighting: 'none',
      ...(secure ? { secureAggregation: { stageTimeoutSeconds: 600 } } : {}),
    });
    const cpuStart = await cpuSeconds(coordinator.child.pid);
    await adminRequest(coordinator.url, token, 'POST', `/api/runs/${run.id}/start`);
    say(`[${label}] run ${run.id} started (${rounds} rounds, strategy ${o.strategy})`);

    let lastProgress = '';
    let final: RunRecord;
    let pollFailures = 0;
    for (;;) {
      // The coordinator's event loop can be busy for seconds (building the model, sending tasks):
      // a failed status request is retried for a while rather than ending the benchmark.
      try {
        final = await adminRequest<RunRecord>(coordinator.url, token, 'GET', `/api/runs/${run.id}`);
        pollFailures = 0;
      } catch (e) {
        if (++pollFailures > 60) throw e;
        const cause = (e as Error & { cause?: Error }).cause;
        say(`status request failed (${(e as Error).message}${cause ? `: ${cause.message}` : ''}); retrying`);
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      const errors = simSites.flatMap((s) => s.errors.map((e) => `${s.siteId}: ${e}`));
      if (errors.length) throw new Error(`simulated sites failed: ${errors.slice(0, 3).join('; ')}`);
      if (final.status === 'completed' || final.status === 'failed') break;
      const progress = simSites.map((s) => s.rounds.size).reduce((a, b) => Math.min(a, b), Infinity);
      const acked = simSites.filter((s) => s.rounds.get(progress)?.ackAt !== undefined).length;
      const line = progress === 0 ? 'waiting for the first task' : `round ${progress}: ${acked}/${sites} updates acknowledged`;
      if (line !== lastProgress) say(`[${label}] ${line}`);
      lastProgress = line;
      await new Promise((r) => setTimeout(r, 250));
    }
    const cpuEnd = await cpuSeconds(coordinator.child.pid);
    const wallSeconds = (performance.now() - wallStart) / 1000;
    if (final.status !== 'completed') throw new Error(`run ${final.status}: ${final.statusReason ?? ''}`);
    const roundRecords = await adminRequest<RoundRecord[]>(coordinator.url, token, 'GET', `/api/runs/${run.id}/rounds`);
    for (const r of roundRecords.filter((x) => x.status === 'completed')) {
      if (r.participants.length !== sites) throw new Error(`round ${r.round}: ${r.participants.length} of ${sites} contributions accepted`);
    }
    if (roundRecords.some((r) => r.status !== 'completed')) {
      say(`warning: some round attempts did not complete: ${JSON.stringify(roundRecords.map((r) => [r.round, r.status]))}`);
    }

    const parameters = simSites[0].rounds.get(1)?.parameters ?? 0;
    if (parameters !== size.parameters) say(`warning: the task holds ${parameters} parameters, the size estimate was ${size.parameters}`);
    const overheadSeconds: number[] = [];
    const fromLastUpdateSeconds: number[] = [];
    const roundSeconds: number[] = [];
    for (let r = 1; r < rounds; r++) {
      const lastAck = Math.max(...simSites.map((s) => s.rounds.get(r)?.ackAt ?? NaN));
      const lastSent = Math.max(...simSites.map((s) => s.rounds.get(r)?.sentAt ?? NaN));
      const nextStart = Math.min(...simSites.map((s) => s.rounds.get(r + 1)?.startAt ?? NaN));
      const thisStart = Math.min(...simSites.map((s) => s.rounds.get(r)?.startAt ?? NaN));
      overheadSeconds.push(round((nextStart - lastAck) / 1000, 3));
      fromLastUpdateSeconds.push(round((nextStart - lastSent) / 1000, 3));
      roundSeconds.push(round((nextStart - thisStart) / 1000, 3));
    }
    const raw = 4 * parameters;
    const down = simSites.flatMap((s) => [...s.rounds.values()].map((t) => t.downloadBytes / raw));
    const up = simSites.flatMap((s) => [...s.rounds.values()].map((t) => (t.uploadBytes ?? NaN) / raw));
    failed = false;
    return {
      parameters,
      overheadSeconds,
      fromLastUpdateSeconds,
      coordinatorCpuSecondsPerRound: cpuStart === null || cpuEnd === null ? NaN : round((cpuEnd - cpuStart) / rounds, 3),
      roundSeconds,
      downloadRatio: round(median(down), 4),
      uploadRatio: round(median(up), 4),
      wallSeconds: round(wallSeconds, 1),
    };
  } finally {
    for (const s of simSites) s.close();
    await coordinator.stop();
    if (o.keep || failed) say(`kept ${workDir} (coordinator.log)`);
    else await rm(workDir, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<void> {
  const program = new Command('bench-round')
    .option('--sites <n>', 'simulated sites', '5')
    .option('--params <n>', 'approximate model parameters', '200000')
    .option('--rounds <n>', 'federated rounds', '3')
    .addOption(new Option('--strategy <name>', 'aggregation strategy').choices([...STRATEGY_NAMES]).default('fedavg'))
    .addOption(new Option('--secure-aggregation <mode>', 'measure with sealed updates, with secure aggregation, or both').choices(['off', 'on', 'both']).default('both'))
    .option('--noise <x>', 'amplitude of the uniform noise the sites add to the global weights', '0.001')
    .option('--keep', 'keep the work directory (coordinator log and database)')
    .option('--json', 'one JSON line on stdout, progress on stderr');
  program.parse(argv);
  const o = program.opts<Options>();
  const sites = Number(o.sites);
  const target = Number(o.params);
  const rounds = Number(o.rounds);
  if (!Number.isInteger(sites) || sites < 1) throw new Error('--sites must be a positive integer');
  if (!Number.isInteger(target) || target < 100) throw new Error('--params must be an integer >= 100');
  if (!Number.isInteger(rounds) || rounds < 2) throw new Error('--rounds must be an integer >= 2 (the overhead is measured between rounds)');
  if (o.secureAggregation !== 'off' && sites < 3) throw new Error('--secure-aggregation needs --sites >= 3');
  if (o.secureAggregation !== 'off' && ['trimmed-mean', 'median'].includes(o.strategy)) {
    throw new Error(`--strategy ${o.strategy} needs every update, which secure aggregation hides: use --secure-aggregation off`);
  }
  const { say, result } = reporter(Boolean(o.json));
  const size = sizeSmallCnn(target);
  say(`model: small-cnn blocks ${size.blocks} width ${size.width} denseUnits ${size.denseUnits}: ${size.parameters} parameters (asked ${target})`);

  const plain = o.secureAggregation === 'on' ? null : await measure(o, size, false, say);
  const secure = o.secureAggregation === 'off' ? null : await measure(o, size, true, say);
  const base = plain ?? secure!;
  const summary = (m: Measured) => ({
    overheadSecondsMedian: round(median(m.overheadSeconds), 3),
    overheadSeconds: m.overheadSeconds,
    fromLastUpdateSecondsMedian: round(median(m.fromLastUpdateSeconds), 3),
    fromLastUpdateSeconds: m.fromLastUpdateSeconds,
    coordinatorCpuSecondsPerRound: m.coordinatorCpuSecondsPerRound,
    roundSecondsMedian: round(median(m.roundSeconds), 3),
    downloadRatio: m.downloadRatio,
    uploadRatio: m.uploadRatio,
    wallSeconds: m.wallSeconds,
  });
  const out = {
    sites,
    params: base.parameters,
    rounds,
    strategy: o.strategy,
    ...(plain ? summary(plain) : {}),
    secureAggregation: secure ? summary(secure) : null,
    // What secure aggregation adds to the coordinator's own work per round (CPU), and to its wall
    // time between the last update and the next round (overhead).
    secureAggregationCpuRatio:
      plain && secure ? round(secure.coordinatorCpuSecondsPerRound / plain.coordinatorCpuSecondsPerRound - 1, 3) : null,
    secureAggregationOverheadRatio:
      plain && secure ? round(median(secure.overheadSeconds) / median(plain.overheadSeconds) - 1, 3) : null,
    // ... and to a whole round as the coordinator runs it (first message to the next round's first).
    secureAggregationRoundTimeRatio: plain && secure ? round(median(secure.roundSeconds) / median(plain.roundSeconds) - 1, 3) : null,
  };
  const describe = (name: string, m: ReturnType<typeof summary>) =>
    say(
      `${name}: coordinator overhead per round median ${m.overheadSecondsMedian} s (${m.overheadSeconds.join(', ')}), ` +
        `from the last update ${m.fromLastUpdateSecondsMedian} s (${m.fromLastUpdateSeconds.join(', ')}), ` +
        `coordinator CPU ${m.coordinatorCpuSecondsPerRound} s per round, round ${m.roundSecondsMedian} s; ` +
        `bytes per site per round / raw float32 model: download ${m.downloadRatio}, upload ${m.uploadRatio}; wall ${m.wallSeconds} s`,
    );
  if (plain) describe('sealed updates', summary(plain));
  if (secure) describe('secure aggregation', summary(secure));
  if (out.secureAggregationCpuRatio !== null) {
    say(
      `secure aggregation adds ${round(100 * out.secureAggregationRoundTimeRatio!, 1)} % to the round time, ` +
        `${round(100 * out.secureAggregationCpuRatio, 1)} % coordinator CPU per round, ${round(100 * out.secureAggregationOverheadRatio!, 1)} % overhead`,
    );
  }
  result(out);
}

main(process.argv).catch((e: unknown) => {
  process.stderr.write(`bench-round: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
