/**
 * npm run bench:chaos [-- --json --sites 5 --rounds 4 --database-url postgres://... --data DIR --keep]
 *
 * A federated run with secure aggregation under injected faults (issue 6). A real coordinator on
 * PostgreSQL (a fresh schema in DATABASE_URL's database, dropped afterwards) and N real site
 * processes on a synthetic BreakHis tree (or --data), plus a rogue client that takes part honestly
 * (zero update, masked) and meanwhile sends forged, replayed, malformed and oversized messages.
 * Faults: one site is SIGKILLed while it trains (and restarted a few seconds later: it rejoins),
 * the coordinator is SIGKILLed mid-run and restarted (sites reconnect by themselves; the run resumes
 * at its last completed round from the same global model).
 *
 * Prints (one JSON line with --json; progress on stderr):
 * {"roundsExpected","roundsCompleted","siteKills","coordinatorRestarts","forgedAccepted",
 *  "replayedAccepted","malformedAccepted","oversizedAccepted","attempts","crashes",
 *  "resumedFromSameModel","finalModelSha256","wallSeconds"}
 * Target: every round completed, nothing forged/replayed/malformed/oversized accepted, no crash.
 */
import { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { DataSource } from 'typeorm';
import { IdentityKeys, generateBoxKeyPair, generateSigningKeyPair } from '@histofed/crypto';
import { generateSyntheticBreakHis } from '@histofed/data';
import { PreparedUpdate, TrainTask } from '@histofed/protocol';
import { SiteSecureAggregation } from '@histofed/secagg';
import { Federation, ManagedProcess, RogueSite, startFederation } from '@histofed/harness';
import { reporter } from '../lib/bench-output';
import { AttackLedger, attackConnections, attackDuringRound } from './rogue-attacks';

interface Options {
  sites: string;
  rounds: string;
  databaseUrl?: string;
  data?: string;
  keep?: boolean;
  json?: boolean;
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

const DEFAULT_DATABASE_URL = 'postgres://histofed:histofed@127.0.0.1:5432/histofed_test';

/** A fresh schema for this run; the returned URL makes it the coordinator's search path. */
async function freshSchema(databaseUrl: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const schema = `chaos_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  const admin = () => new DataSource({ type: 'postgres', url: databaseUrl }).initialize();
  let client: DataSource;
  try {
    client = await admin();
  } catch (e) {
    throw new Error(
      `bench:chaos runs the coordinator on PostgreSQL and cannot reach ${databaseUrl.replace(/:[^:@/]*@/, ':***@')} ` +
        `(${(e as Error).message}); start a server and give --database-url or DATABASE_URL (.ci/run shows the setup)`,
    );
  }
  await client.query(`CREATE SCHEMA ${schema}`);
  await client.destroy();
  const url = new URL(databaseUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return {
    url: url.toString(),
    drop: async () => {
      const c = await admin();
      await c.query(`DROP SCHEMA ${schema} CASCADE`);
      await c.destroy();
    },
  };
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

async function main(): Promise<void> {
  const opts = new Command('bench-chaos')
    .option('--sites <n>', 'site processes', '5')
    .option('--rounds <n>', 'rounds of the run', '4')
    .option('--database-url <url>', `PostgreSQL database (default: DATABASE_URL or ${DEFAULT_DATABASE_URL}); a fresh schema is used and dropped`)
    .option('--data <dir>', 'BreakHis tree the simulated sites share (default: a small synthetic one)')
    .option('--keep', 'keep the work directory and the database schema')
    .option('--json', 'print one JSON line on stdout (progress on stderr)')
    .parse(process.argv)
    .opts<Options>();
  const { say, result } = reporter(Boolean(opts.json));
  const sites = Number(opts.sites);
  const rounds = Number(opts.rounds);
  if (!Number.isInteger(sites) || sites < 3) throw new Error(`--sites must be an integer >= 3 (secure aggregation), got "${opts.sites}"`);
  if (!Number.isInteger(rounds) || rounds < 3) throw new Error(`--rounds must be an integer >= 3 (a site kill and a coordinator restart happen in rounds 2 and 3), got "${opts.rounds}"`);
  const started = performance.now();
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'hf-chaos-'));
  const db = await freshSchema(opts.databaseUrl ?? process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL);
  let fed: Federation | undefined;
  const rogues: RogueSite[] = [];
  const ledger = new AttackLedger();
  try {
    const dataDir = opts.data ?? path.join(workDir, 'data');
    if (!opts.data) await generateSyntheticBreakHis(dataDir, { seed: 7, patientsPerSubtype: 3, imagesPerPatient: 6 });
    say(`starting a coordinator on PostgreSQL and ${sites} sites (work dir ${workDir})`);
    fed = await startFederation({ dataDir, workDir, sites, seed: 7, coordinatorEnv: { DATABASE_URL: db.url }, timeoutMs: 180_000 });
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
    const siteKilledInRound = await currentRound();
    if (siteKilledInRound !== null) {
      await fed.restartSite(victim, 'SIGKILL', 3000);
      siteKills++;
      say(`${victim} killed while training round ${siteKilledInRound}, restarted 3 s later`);
    }
    const victimAfter = fed.sites[fed.siteIds.length - 1];

    // The coordinator dies while round 3 trains; it restarts and resumes.
    await fed.sites[0].waitFor(training(3), 600_000, 'round 3 training');
    let coordinatorRestarts = 0;
    const coordinatorKilledInRound = await currentRound();
    if (coordinatorKilledInRound !== null) {
      await fed.restartCoordinator('SIGKILL');
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
    const killedSiteRejoined = victimAfter !== fed.sites[fed.siteIds.length - 1] || victimAfter.lines.some((l) => l.msg === 'update accepted');
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
      finalModelSha256: run.currentModelHash,
      wallSeconds: Math.round((performance.now() - started) / 1000),
    };
    for (const line of ledger.reasons) say(`  ${line}`);
    say(
      `rounds ${out.roundsCompleted}/${rounds} (${run.status}${run.statusReason ? `: ${run.statusReason}` : ''}), site kills ${siteKills}, ` +
        `coordinator restarts ${coordinatorRestarts}, accepted attacks: forged ${out.forgedAccepted}/${ledger.attempts.forged}, ` +
        `replayed ${out.replayedAccepted}/${ledger.attempts.replayed}, malformed ${out.malformedAccepted}/${ledger.attempts.malformed}, ` +
        `oversized ${out.oversizedAccepted}/${ledger.attempts.oversized}; crashes ${crashes}; resumed from the same model: ${resumedFromSameModel}; ` +
        `final model ${run.currentModelHash}; ${out.wallSeconds} s`,
    );
    result(out);
  } finally {
    for (const r of rogues) r.close();
    await fed?.stop();
    if (!opts.keep) {
      await db.drop().catch(() => undefined);
      await rm(workDir, { recursive: true, force: true });
    } else {
      say(`kept ${workDir} and the database schema (${db.url})`);
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
