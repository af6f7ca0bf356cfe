/**
 * npm run bench:round [-- --sites 50 --params 5000000 --rounds 3 --strategy fedavg --json]
 *
 * The coordinator's cost of a federated round (issue 6). Starts a real coordinator process
 * (embedded PGlite, sites auto-approved, no central test data) and N lightweight simulated sites
 * in this process (socket.io clients speaking the real protocol: hello with a box key, each task
 * answered with a sealed update = received global weights + small noise). Creates a run of a
 * small-cnn sized to about --params parameters through the admin REST API and reports:
 *
 * - coordinator overhead per round: from the last site's update ack of round r to the first site
 *   receiving round r+1's task (seconds; median over rounds). It covers opening/checking the last
 *   update, aggregation, storing the model and sending the next task; the simulated sites' own
 *   work (decode, noise, seal) happens before, serialized in this process, and is not included.
 * - bytes on the wire per site per round, measured at the client's Engine.IO packets (JSON text
 *   packets + binary attachments, not WebSocket framing), divided by the raw float32 model size
 *   (4 x parameters): download (task) and upload (update) ratios, medians over sites and rounds.
 * - secure aggregation: not implemented in HistoFed yet; reported as null.
 *
 * Progress goes to stderr with --json; stdout gets one JSON line.
 */
import { Command, Option } from 'commander';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
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

async function main(argv: string[]): Promise<void> {
  const program = new Command('bench-round')
    .option('--sites <n>', 'simulated sites', '5')
    .option('--params <n>', 'approximate model parameters', '200000')
    .option('--rounds <n>', 'federated rounds', '3')
    .addOption(new Option('--strategy <name>', 'aggregation strategy').choices([...STRATEGY_NAMES]).default('fedavg'))
    .option('--noise <x>', 'amplitude of the uniform noise the sites add to the global weights', '0.001')
    .option('--keep', 'keep the work directory (coordinator log and database)')
    .option('--json', 'one JSON line on stdout, progress on stderr');
  program.parse(argv);
  const o = program.opts<Options>();
  const sites = Number(o.sites);
  const target = Number(o.params);
  const rounds = Number(o.rounds);
  const noise = Number(o.noise);
  if (!Number.isInteger(sites) || sites < 1) throw new Error('--sites must be a positive integer');
  if (!Number.isInteger(target) || target < 100) throw new Error('--params must be an integer >= 100');
  if (!Number.isInteger(rounds) || rounds < 2) throw new Error('--rounds must be an integer >= 2 (the overhead is measured between rounds)');
  const { say, result } = reporter(Boolean(o.json));

  const size = sizeSmallCnn(target);
  const model = {
    kind: 'small-cnn',
    imageSize: 32,
    numClasses: 2,
    options: { width: size.width, blocks: size.blocks, denseUnits: size.denseUnits, dropout: 0 },
  };
  say(`model: small-cnn blocks ${size.blocks} width ${size.width} denseUnits ${size.denseUnits}: ${size.parameters} parameters (asked ${target})`);
  const rawBytes = 4 * size.parameters;
  const maxMessageBytes = Math.max(256 * 1024 * 1024, Math.ceil(rawBytes * 1.25) + 1024 * 1024);

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'histofed-bench-round-'));
  const token = randomBytes(24).toString('hex');
  const wallStart = performance.now();
  say(`starting the coordinator (work dir ${workDir}, max message ${maxMessageBytes} bytes)`);
  const coordinator = await startCoordinator({
    dataDir: path.join(workDir, 'coordinator'),
    logFile: path.join(workDir, 'coordinator.log'),
    token,
    maxMessageBytes,
  });
  const simSites: SimSite[] = [];
  let failed = true;
  try {
    const ids = Array.from({ length: sites }, (_, i) => `bench-site-${i + 1}`);
    for (const id of ids) simSites.push(new SimSite(coordinator.url, id, noise, maxMessageBytes));
    await Promise.all(simSites.map((s) => s.hello(100)));
    say(`${sites} simulated sites connected`);

    const run = await adminRequest<RunRecord>(coordinator.url, token, 'POST', '/api/runs', {
      name: `bench-round ${sites} sites ${size.parameters} params ${o.strategy}`,
      model,
      strategy: o.strategy,
      rounds,
      minSites: sites,
      maxSites: sites,
      personalizeEpochs: 0,
      localEpochs: 1,
      roundTimeoutSeconds: 3600,
      waitForSitesSeconds: 120,
      maxUpdateNorm: 0,
      classWeighting: 'none',
    });
    await adminRequest(coordinator.url, token, 'POST', `/api/runs/${run.id}/start`);
    say(`run ${run.id} started (${rounds} rounds, strategy ${o.strategy})`);

    let lastProgress = '';
    let final: RunRecord;
    let pollFailures = 0;
    const reported = new Set<number>();
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
      for (let r = 1; r < rounds; r++) {
        if (reported.has(r) || !simSites.every((x) => x.rounds.get(r)?.ackAt !== undefined)) continue;
        const next = simSites.map((x) => x.rounds.get(r + 1)?.taskAt).filter((t): t is number => t !== undefined);
        if (next.length === 0) continue;
        reported.add(r);
        const lastAck = Math.max(...simSites.map((x) => x.rounds.get(r)?.ackAt ?? NaN));
        say(`overhead between rounds ${r} and ${r + 1}: ${round((Math.min(...next) - lastAck) / 1000, 3)} s`);
      }
      const line = progress === 0 ? 'waiting for the first task' : `round ${progress}: ${acked}/${sites} updates acknowledged`;
      if (line !== lastProgress) say(line);
      lastProgress = line;
      await new Promise((r) => setTimeout(r, 250));
    }
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
    for (let r = 1; r < rounds; r++) {
      const lastAck = Math.max(...simSites.map((s) => s.rounds.get(r)?.ackAt ?? NaN));
      const firstTask = Math.min(...simSites.map((s) => s.rounds.get(r + 1)?.taskAt ?? NaN));
      overheadSeconds.push(round((firstTask - lastAck) / 1000, 3));
    }
    const raw = 4 * parameters;
    const down = simSites.flatMap((s) => [...s.rounds.values()].map((t) => t.downloadBytes / raw));
    const up = simSites.flatMap((s) => [...s.rounds.values()].map((t) => (t.uploadBytes ?? NaN) / raw));
    const out = {
      sites,
      params: parameters,
      rounds,
      strategy: o.strategy,
      overheadSecondsMedian: round(median(overheadSeconds), 3),
      overheadSeconds,
      downloadRatio: round(median(down), 4),
      uploadRatio: round(median(up), 4),
      secureAggregation: null,
      secureAggregationOverheadRatio: null,
      wallSeconds: round(wallSeconds, 1),
    };
    say(`coordinator overhead per round: median ${out.overheadSecondsMedian} s (${overheadSeconds.join(', ')})`);
    say(`bytes per site per round / raw float32 model (${raw} bytes): download ${out.downloadRatio}, upload ${out.uploadRatio}`);
    say('secure aggregation: not implemented in HistoFed yet; its fields are null');
    say(`wall time ${out.wallSeconds} s`);
    result(out);
    failed = false;
  } finally {
    for (const s of simSites) s.close();
    await coordinator.stop();
    if (o.keep || failed) say(`kept ${workDir} (coordinator.log)`);
    else await rm(workDir, { recursive: true, force: true });
  }
}

main(process.argv).catch((e: unknown) => {
  process.stderr.write(`bench-round: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
