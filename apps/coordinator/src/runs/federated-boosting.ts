import { WeightSet, encodeWeights, parameterCount, sha256Hex } from '@histofed/fl-core';
import { SiteResult, Strategy, StrategyState } from '@histofed/aggregation';
import { BoostingTask, DEFAULT_CHUNK_BYTES, chunkCount } from '@histofed/protocol';
import type { SiteFile } from '../federation/model-distribution';
import type { RunConfig } from '../persistence/records';

/**
 * Federated boosting (issue 16, run option ensemble.boosting). After the run's last round, each
 * boosted member 'global-b<k>' is trained federatedly for `rounds` rounds of kind 'boost', starting
 * from the final global model; in each of them the sites weigh their own training images by the
 * errors of the ensemble so far (the mean of 'global' and 'global-b1'..'global-b<k-1>', which the
 * task names as blobs to fetch; libs/ml boostingImageWeights at the site). Aggregation is the run's
 * strategy (a fresh server state per member) and, with secure aggregation, the secure sum — the
 * weights never leave a site. Pure planning here; the orchestrator runs the rounds.
 */

export type BoostingConfig = NonNullable<NonNullable<RunConfig['ensemble']>['boosting']>;

/** The round number of boosted member `member`'s round `round` (1-based): after the run's rounds, member by member. */
export function boostRound(runRounds: number, roundsPerMember: number, member: number, round: number): number {
  return runRounds + (member - 1) * roundsPerMember + round;
}

export function boostedMemberId(member: number): string {
  return `global-b${member}`;
}

/** The ensemble so far as files every participant may fetch, and the task's boosting field naming them. */
export function boostingTaskFor(ensemble: readonly WeightSet[], b: Pick<BoostingConfig, 'strength' | 'maxRatio'>): { files: SiteFile[]; task: BoostingTask } {
  const files = ensemble.map((weights) => {
    const data = encodeWeights(weights);
    return { sha256: sha256Hex(data), bytes: data.length, data };
  });
  return {
    files,
    task: {
      members: files.map((f) => ({ sha256: f.sha256, totalBytes: f.bytes, chunkBytes: DEFAULT_CHUNK_BYTES, count: chunkCount(f.bytes, DEFAULT_CHUNK_BYTES) })),
      strength: b.strength,
      maxRatio: b.maxRatio,
    },
  };
}

/** What the orchestrator lends the boosting loop (its round machinery). */
export interface BoostingRounds {
  participants(round: number): Promise<string[]>;
  /** One round's training from `start` with the boosting task: the results to aggregate, or why it failed. */
  gather(
    round: number,
    participants: string[],
    start: { weights: WeightSet; hash: string },
    boosting: BoostingTask,
  ): Promise<{ ok: true; toAggregate: SiteResult[]; contributors: string[] } | { ok: false; reason: string }>;
  /** Offers the members' files to a site until released. */
  offer(siteId: string, files: readonly SiteFile[]): () => void;
  putModel(bytes: Uint8Array, parameters: number): Promise<string>;
  createStrategy(): Strategy;
  log(level: 'info' | 'warn', msg: string, fields: Record<string, unknown>): void;
  stopping(): boolean;
}

/**
 * Trains the boosted members. A round is tried `attempts` times; a member whose round still fails
 * ends boosting (logged) and the run keeps the members finished before — boosting never fails a run.
 */
export async function trainBoostedMembers(
  runRounds: number,
  b: BoostingConfig,
  global: { weights: WeightSet; hash: string },
  rounds: BoostingRounds,
  attempts: number,
): Promise<{ id: string; weights: WeightSet }[]> {
  const ensemble: WeightSet[] = [global.weights];
  const out: { id: string; weights: WeightSet }[] = [];
  for (let member = 1; member <= b.members; member++) {
    const id = boostedMemberId(member);
    const { files, task } = boostingTaskFor(ensemble, b);
    const strategy = rounds.createStrategy();
    let state: StrategyState | undefined;
    let current = global;
    rounds.log('info', 'boosted member started', { member: id, ensemble: ensemble.length, rounds: b.rounds, strength: b.strength });
    for (let r = 1; r <= b.rounds; r++) {
      const round = boostRound(runRounds, b.rounds, member, r);
      let done = false;
      for (let attempt = 1; attempt <= attempts && !done; attempt++) {
        if (rounds.stopping()) return out;
        const participants = await rounds.participants(round);
        const releases = participants.map((siteId) => rounds.offer(siteId, files));
        let gathered: Awaited<ReturnType<BoostingRounds['gather']>>;
        try {
          gathered = await rounds.gather(round, participants, current, task);
        } finally {
          for (const release of releases) release();
        }
        if (!gathered.ok) {
          rounds.log('warn', 'boosting round failed', { member: id, round, attempt, reason: gathered.reason });
          continue;
        }
        const aggregated = strategy.aggregate(current.weights, gathered.toAggregate, state);
        state = aggregated.state;
        const hash = await rounds.putModel(encodeWeights(aggregated.weights), parameterCount(aggregated.weights));
        current = { weights: aggregated.weights, hash };
        rounds.log('info', 'boosting round completed', { member: id, round, of: `${r}/${b.rounds}`, contributors: gathered.contributors, modelHash: hash });
        done = true;
      }
      if (!done) {
        rounds.log('warn', 'boosting stopped: a round failed every attempt', { member: id, round, kept: out.map((m) => m.id) });
        return out;
      }
    }
    ensemble.push(current.weights);
    out.push({ id, weights: current.weights });
  }
  return out;
}
