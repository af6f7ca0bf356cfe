/**
 * npm run bench:chaos [-- --json --sites 5 --rounds 4 --database-url postgres://... --pglite --data DIR --keep
 *                        --flood-seconds 30 --flood-connections 200 --flood-address 127.0.0.2]
 *
 * A federated run with secure aggregation under injected faults (issue 6). A real coordinator on
 * PostgreSQL (a fresh schema in DATABASE_URL's database, dropped afterwards; a local server that
 * is not running is started as .ci/run does; without one, the embedded PGlite — `database` says
 * which) and N real site processes on a synthetic BreakHis tree (or --data), plus a rogue client
 * that takes part honestly (zero update, masked) and meanwhile sends forged, replayed, malformed
 * and oversized messages.
 * Faults: one site is SIGKILLed while it trains (and restarted a few seconds later: it rejoins),
 * the coordinator is SIGKILLed mid-run and restarted (sites reconnect by themselves; the run resumes
 * at its last completed round from the same global model).
 * Then an unauthenticated flood (issue 13) while the real sites train a second run: connections
 * from another loopback address that never say hello, half-open binary packets, bad-signature
 * enrollments and junk HTTP (unauthenticated-flood.ts). The coordinator runs with the default
 * per-address limits (16 connections, 30 enrollments and 600 requests a minute), which the real
 * sites on 127.0.0.1 stay under.
 *
 * Prints (one JSON line with --json; progress on stderr): the chaos figures ({"roundsCompleted",
 * "forgedAccepted", ..., "killedSiteRejoined", ...}) and `flood`: peak coordinator RSS before and
 * under the flood, connections opened and refused, rounds and contributions completed during the
 * flood, and whether what was stored before it is unchanged after.
 * Target: every round completed, nothing forged/replayed/malformed/oversized accepted, no crash,
 * the killed site back in a later round; under the flood the sites keep training, RSS stays
 * bounded, nothing stored changes.
 */
import { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { IdentityKeys, generateBoxKeyPair, generateSigningKeyPair } from '@histofed/crypto';
import { generateSyntheticBreakHis } from '@histofed/data';
import { PreparedUpdate, TrainTask } from '@histofed/protocol';
import { SiteSecureAggregation } from '@histofed/secagg';
import { Federation, ManagedProcess, RogueSite, startFederation } from '@histofed/harness';
import { reporter, round } from '../lib/bench-output';
import { AttackLedger, attackConnections, attackDuringRound } from './rogue-attacks';
import { DEFAULT_DATABASE_URL, chaosDatabase } from './chaos-database';
import { FloodPhaseOptions, floodPhase } from './flood-phase';

interface Options {
  sites: string;
  rounds: string;
  databaseUrl?: string;
  pglite?: boolean;
  startPostgres: boolean;
  data?: string;
  keep?: boolean;
  json?: boolean;
  flood: boolean;
  floodSeconds: string;
  floodConnections: string;
  floodAddress: string;
  floodRounds: string;
}

interface RunView {
  status: string;
  statusReason: string | null;
  completedRounds: number;
  currentModelHash: string | null;
}
interface RoundView {
  round: number;
  status: string;
  baseModelHash: string;
  modelHash: string | null;
}

/** The rogue participant: honest zero updates through real secure aggregation, plus the attacks. */
function startRogue(url: string, keys: IdentityKeys, ledger: AttackLedger, say: (s: string) => void): RogueSite {
  const secure = new SiteSecureAggregation('rogue', keys.sign.secretKey);
  let previous: PreparedUpdate | undefined;
  const rogue = new RogueSite(
    url,
    'rogue',
    async (r: RogueSite, task: TrainTask) => {
      if (!task.secagg) return;
      const global = r.globals.get(task.modelHash)!;
      const masked = secure.mask(task.config.runId, task.config.round, task.secagg, global, global, 10);
      const genuine = r.update(task, { masked, numSamples: 10 });
      const ack = await r.deliver(`round ${task.config.round}`, genuine);
      say(`rogue: its own masked update for round ${task.config.round}: ${ack.ok ? 'accepted' : ack.error}`);
      await attackDuringRound(r, task, genuine, previous, ledger);
      previous = genuine;
    },
    keys,
  );
  for (const [event, answer] of secure.handlers()) rogue.socket.on(event, (raw: unknown, ack: (a: unknown) => void) => ack(answer(raw)));
  return rogue;
}

/**
 * The rogue (scripts/lib/rogue-site.ts) fetches each task's model in the background: when the
 * coordinator is SIGKILLed meanwhile, socket.io rejects the pending fetch ("socket has been
 * disconnected") with nobody awaiting it. That is the fault injected, not a failure of the bench.
 */
let rogueFetchesCut = 0;
process.on('unhandledRejection', (e: unknown) => {
  const message = (e as Error)?.message ?? String(e);
  if (/socket has been disconnected|operation has timed out/.test(message)) {
    rogueFetchesCut++;
    return;
  }
  process.stderr.write(`bench:chaos: unhandled rejection: ${(e as Error)?.stack ?? message}\n`);
  process.exit(1);
});

async function main(): Promise<void> {
  const opts = new Command('bench-chaos')
    .option('--sites <n>', 'site processes', '5')
    .option('--rounds <n>', 'rounds of the run', '4')
    .option('--database-url <url>', `PostgreSQL database (default: DATABASE_URL or ${DEFAULT_DATABASE_URL}); a fresh schema is used and dropped`)
    .option('--pglite', "run the coordinator on its embedded PGlite instead (also the fallback when no server can be reached)")
    .option('--no-start-postgres', 'do not try to start a local PostgreSQL cluster (pg_ctlcluster) that is not running')
    .option('--data <dir>', 'BreakHis tree the simulated sites share (default: a small synthetic one)')
    .option('--keep', 'keep the work directory and the database schema')
    .option('--json', 'print one JSON line on stdout (progress on stderr)')
    .option('--no-flood', 'skip the unauthenticated-flood phase')
    .option('--flood-seconds <s>', 'how long the flood lasts', '30')
    .option('--flood-connections <n>', 'attacker socket.io connections (each reconnects when closed)', '200')
    .option('--flood-address <ip>', "the attackers' loopback address (the sites use 127.0.0.1)", '127.0.0.2')
    .option('--flood-rounds <n>', 'rounds of the run the sites train during the flood', '10')
    .parse(process.argv)
    .opts<Options>();
  const { say, result } = reporter(Boolean(opts.json));
  const sites = Number(opts.sites);
  const rounds = Number(opts.rounds);
  if (!Number.isInteger(sites) || sites < 3) throw new Error(`--sites must be an integer >= 3 (secure aggregation), got "${opts.sites}"`);
  if (!Number.isInteger(rounds) || rounds < 3) throw new Error(`--rounds must be an integer >= 3 (a site kill and a coordinator restart happen in rounds 2 and 3), got "${opts.rounds}"`);
  const started = performance.now();
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'hf-chaos-'));
  const db = await chaosDatabase(opts.databaseUrl ?? process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL, { forcePglite: opts.pglite, startServer: opts.startPostgres }, say);
  const flood: FloodPhaseOptions = {
    seconds: Number(opts.floodSeconds),
    connections: Number(opts.floodConnections),
    address: opts.floodAddress,
    rounds: Number(opts.floodRounds),
  };
  if (!(flood.seconds > 0 && flood.seconds <= 120)) throw new Error(`--flood-seconds must be in (0, 120], got "${opts.floodSeconds}"`);
  if (!Number.isInteger(flood.connections) || flood.connections < 1 || flood.connections > 500) throw new Error(`--flood-connections must be an integer in [1, 500], got "${opts.floodConnections}"`);
  if (!/^127\.\d+\.\d+\.\d+$/.test(flood.address) || flood.address === '127.0.0.1') throw new Error(`--flood-address must be a loopback address other than 127.0.0.1, got "${opts.floodAddress}"`);
  if (!Number.isInteger(flood.rounds) || flood.rounds < 2) throw new Error(`--flood-rounds must be an integer >= 2, got "${opts.floodRounds}"`);
  let fed: Federation | undefined;
  const rogues: RogueSite[] = [];
  const ledger = new AttackLedger();
  try {
    const dataDir = opts.data ?? path.join(workDir, 'data');
    if (!opts.data) await generateSyntheticBreakHis(dataDir, { seed: 7, patientsPerSubtype: 3, imagesPerPatient: 6 });
    say(`starting a coordinator on ${db.kind === 'postgresql' ? 'PostgreSQL' : 'embedded PGlite'} and ${sites} sites (work dir ${workDir})`);
    fed = await startFederation({
      dataDir,
      workDir,
      sites,
      seed: 7,
      coordinatorEnv: {
        ...(db.kind === 'postgresql' ? { DATABASE_URL: db.url } : {}),
        // The default per-address limits, which the flood from another address meets; the real
        // sites, the rogue and the admin client on 127.0.0.1 stay under them.
        HISTOFED_MAX_CONNECTIONS_PER_ADDRESS: '16',
        HISTOFED_ENROLL_PER_MINUTE: undefined,
        HISTOFED_REQUESTS_PER_MINUTE: undefined,
      },
      timeoutMs: 180_000,
    });
    const federation = fed;
    const rogueKeys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
    const connectRogue = async () => {
      const rogue = startRogue(federation.url, rogueKeys, ledger, say);
      rogues.push(rogue);
      await rogue.enroll();
      const ack = await rogue.hello(10);
      if (!ack.ok) throw new Error(`rogue refused: ${ack.error}`);
    };
    await connectRogue();

    const { id: runId } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      name: 'chaos',
      rounds,
      minSites: 3,
      maxSites: sites + 1,
      // Long enough rounds (a few seconds of training) for the faults to land mid-round.
      localEpochs: 12,
      batchSize: 8,
      personalizeEpochs: 0,
      roundTimeoutSeconds: 120,
      waitForSitesSeconds: 120,
      model: { kind: 'small-cnn', imageSize: 48, numClasses: 2 },
      secureAggregation: { stageTimeoutSeconds: 15 },
    });
    await fed.admin.request('POST', `/api/runs/${runId}/start`);
    say(`run ${runId} started: ${rounds} rounds, secure aggregation on`);
    const training = (round: number) => (l: Record<string, unknown>) => l.msg === 'training started' && l.round === round;
    /** The round in progress (last completed + 1), or null once the run ended. */
    const currentRound = async () => {
      const r = await federation.admin.request<RunView>('GET', `/api/runs/${runId}`);
      return r.status === 'running' ? r.completedRounds + 1 : null;
    };
    // Attacks on connections run alongside the schedule (one waits for a socket that never answers).
    const connectionAttacks = attackConnections(fed.url, ledger);

    // A site dies while it trains round 2 and comes back a few seconds later.
    const victim = fed.siteIds[fed.siteIds.length - 1];
    await fed.sites[fed.siteIds.length - 1].waitFor(training(2), 600_000, `${victim} to train round 2`);
    let siteKills = 0;
    let victimKilledAt = 0;
    const siteKilledInRound = await currentRound();
    if (siteKilledInRound !== null) {
      victimKilledAt = Date.now();
      await fed.restartSite(victim, 'SIGKILL', 3000);
      siteKills++;
      say(`${victim} killed while training round ${siteKilledInRound}, restarted 3 s later`);
    }
    const victimAfter = fed.sites[fed.siteIds.length - 1];
    let coordinatorKilledAt = Infinity;
    const coordinators = [fed.coordinator];

    // The coordinator dies while round 3 trains; it restarts and resumes.
    await fed.sites[0].waitFor(training(3), 600_000, 'round 3 training');
    let coordinatorRestarts = 0;
    const coordinatorKilledInRound = await currentRound();
    if (coordinatorKilledInRound !== null) {
      coordinatorKilledAt = Date.now();
      await fed.restartCoordinator('SIGKILL');
      coordinators.push(fed.coordinator);
      coordinatorRestarts++;
      say(`coordinator killed while round ${coordinatorKilledInRound} trained, restarted`);
    }
    await connectRogue();
    await connectionAttacks;

    const run = await fed.admin.waitForRun<RunView>(runId, 900_000, 2000);
    const roundViews = await fed.admin.request<RoundView[]>('GET', `/api/runs/${runId}/rounds`);
    const byRound = new Map(roundViews.filter((r) => r.status === 'completed').map((r) => [r.round, r]));
    const resumedFromSameModel = [...byRound.values()].every((r) => r.round === 1 || byRound.get(r.round - 1)?.modelHash === r.baseModelHash);
    // A crash: a process that exited although nobody stopped it (kills above replaced theirs).
    const unexpectedExits = (ps: ManagedProcess[]) => ps.filter((p) => p.child.exitCode !== null || p.child.signalCode !== null).length;
    const crashes = unexpectedExits([fed.coordinator, ...fed.sites]);
    const handlerErrors = fed.coordinator.lines.filter((l) => l.level === 'error').length;
    const resumed = fed.coordinator.lines.find((l) => l.msg === 'resuming run');
    // The restarted victim's accepted updates in this run: in which rounds, and whether it was back
    // before the coordinator's restart (which makes every site reconnect) or only after it.
    const victimAccepted = victimAfter.lines.filter((l) => l.msg === 'update accepted' && l.runId === runId);
    const killedSiteRejoined = victimAccepted.length > 0;
    const killedSiteRejoinedInRounds = [...new Set(victimAccepted.map((l) => Number(l.round)))].sort((a, b) => a - b);
    // The first round (after the kill) that the coordinator started with the victim among its participants.
    const selected = coordinators
      .flatMap((c) => c.lines)
      .find((l) => l.msg === 'round started' && l.runId === runId && Date.parse(String(l.time)) > victimKilledAt && (l.participants as string[]).includes(victim));
    const selectedAt = selected ? Date.parse(String(selected.time)) : null;
    const killedSiteSelectedAgain = selected
      ? { round: Number(selected.round), attempt: Number(selected.attempt), secondsAfterKill: round((selectedAt! - victimKilledAt) / 1000, 1), beforeCoordinatorRestart: selectedAt! < coordinatorKilledAt }
      : null;
    const victimConnected = victimAfter.lines.find((l) => l.msg === 'connected to coordinator');
    const out = {
      roundsExpected: rounds,
      roundsCompleted: run.status === 'completed' ? run.completedRounds : byRound.size,
      runStatus: run.status,
      runStatusReason: run.statusReason,
      siteKills,
      siteKilledInRound,
      coordinatorRestarts,
      coordinatorKilledInRound,
      forgedAccepted: ledger.accepted.forged,
      replayedAccepted: ledger.accepted.replayed,
      malformedAccepted: ledger.accepted.malformed,
      oversizedAccepted: ledger.accepted.oversized,
      attempts: ledger.attempts,
      crashes,
      coordinatorErrorLines: handlerErrors,
      resumedAtRound: resumed ? Number(resumed.completedRounds) + 1 : null,
      resumedFromSameModel,
      killedSiteRejoined,
      killedSiteRejoinedInRounds,
      killedSiteSelectedAgain,
      killedSiteConnectedAfterSeconds: victimConnected && victimKilledAt ? round((Date.parse(String(victimConnected.time)) - victimKilledAt) / 1000, 1) : null,
      finalModelSha256: run.currentModelHash,
      rogueFetchesCutByTheRestart: rogueFetchesCut,
      database: db.kind,
      databaseNote: db.note,
      flood: null as unknown,
      wallSeconds: 0,
    };
    for (const line of ledger.reasons) say(`  ${line}`);
    say(
      `rounds ${out.roundsCompleted}/${rounds} (${run.status}${run.statusReason ? `: ${run.statusReason}` : ''}), site kills ${siteKills}, ` +
        `coordinator restarts ${coordinatorRestarts}, accepted attacks: forged ${out.forgedAccepted}/${ledger.attempts.forged}, ` +
        `replayed ${out.replayedAccepted}/${ledger.attempts.replayed}, malformed ${out.malformedAccepted}/${ledger.attempts.malformed}, ` +
        `oversized ${out.oversizedAccepted}/${ledger.attempts.oversized}; crashes ${crashes}; resumed from the same model: ${resumedFromSameModel}; ` +
        `final model ${run.currentModelHash}; killed site back in rounds [${killedSiteRejoinedInRounds.join(', ')}] ` +
        `(connected ${out.killedSiteConnectedAfterSeconds} s after the kill, selected again ` +
        `${killedSiteSelectedAgain ? `in round ${killedSiteSelectedAgain.round} ${killedSiteSelectedAgain.secondsAfterKill} s after it${killedSiteSelectedAgain.beforeCoordinatorRestart ? ', before the coordinator restart' : ''}` : 'never'})`,
    );
    if (opts.flood) {
      for (const r of rogues) r.close();
      out.flood = await floodPhase(federation, runId, flood, say);
    }
    out.wallSeconds = Math.round((performance.now() - started) / 1000);
    say(`database: ${db.kind}${db.kind === 'pglite' ? ` (${db.note})` : ''}; ${out.wallSeconds} s`);
    result(out);
  } finally {
    for (const r of rogues) r.close();
    await fed?.stop();
    if (!opts.keep) {
      await db.drop().catch(() => undefined);
      await rm(workDir, { recursive: true, force: true });
    } else {
      say(`kept ${workDir}${db.kind === 'postgresql' ? ` and the database schema (${db.url})` : ''}`);
    }
  }
}

main().then(
  // Sockets closed by the rogue's attacks may keep the event loop alive for a while: exit now.
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench:chaos: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
