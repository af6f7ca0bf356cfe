import { WeightSet, decodeWeights, namedTensor, sha256Hex } from '@histofed/fl-core';
import { createStrategy } from '@histofed/aggregation';
import { BoostingTask, boostingTaskSchema } from '@histofed/protocol';
import { BoostingRounds, boostRound, boostedMemberId, boostingTaskFor, trainBoostedMembers } from './federated-boosting';

const w = (v: number): WeightSet => [namedTensor('dense/kernel', [2], [v, -v])];
const config = { members: 2, rounds: 2, strength: 2, maxRatio: 20 };

/** Fake rounds: each site's update adds its delta to the start; `fail` lists (round, attempt) pairs that fail. */
function fakeRounds(fail: Set<string> = new Set()) {
  const tasks: { round: number; start: number; boosting: BoostingTask }[] = [];
  const offered: { siteId: string; shas: string[] }[] = [];
  const attempts = new Map<number, number>();
  let released = 0;
  const logs: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
  const rounds: BoostingRounds = {
    participants: async () => ['a', 'b'],
    gather: async (round, participants, start, boosting) => {
      const attempt = (attempts.get(round) ?? 0) + 1;
      attempts.set(round, attempt);
      tasks.push({ round, start: start.weights[0].values[0], boosting });
      if (fail.has(`${round}/${attempt}`)) return { ok: false, reason: 'too few sites' };
      return {
        ok: true,
        contributors: participants,
        toAggregate: participants.map((siteId, i) => ({ siteId, numSamples: 10, weights: w(start.weights[0].values[0] + (i === 0 ? 1 : 3)), metrics: {} })),
      };
    },
    offer: (siteId, files) => {
      offered.push({ siteId, shas: files.map((f) => f.sha256) });
      return () => void released++;
    },
    putModel: async (bytes) => sha256Hex(bytes),
    createStrategy: () => createStrategy('fedavg'),
    log: (level, msg, fields) => logs.push({ level, msg, fields }),
    stopping: () => false,
  };
  return { rounds, tasks, offered, logs, released: () => released };
}

describe('federated boosting (issue 16)', () => {
  it('numbers boosting rounds after the run, member by member; names the members', () => {
    expect([boostRound(5, 2, 1, 1), boostRound(5, 2, 1, 2), boostRound(5, 2, 2, 1), boostRound(5, 2, 2, 2)]).toEqual([6, 7, 8, 9]);
    expect(boostedMemberId(3)).toBe('global-b3');
  });

  it('names the ensemble so far as fetchable blobs in a valid task', () => {
    const { files, task } = boostingTaskFor([w(1), w(2)], config);
    expect(boostingTaskSchema.parse(task)).toEqual(task);
    expect(task.members.map((m) => m.sha256)).toEqual(files.map((f) => f.sha256));
    files.forEach((f, i) => {
      expect(sha256Hex((f as { data: Uint8Array }).data)).toBe(f.sha256);
      expect(decodeWeights((f as { data: Uint8Array }).data, 'member')[0].values[0]).toBe(i + 1);
    });
    expect(task).toMatchObject({ strength: 2, maxRatio: 20 });
  });

  it('trains each member from the final global model on the growing ensemble, aggregating with the strategy', async () => {
    const f = fakeRounds();
    const global = { weights: w(10), hash: 'g' };
    const members = await trainBoostedMembers(5, config, global, f.rounds, 3);
    expect(members.map((m) => m.id)).toEqual(['global-b1', 'global-b2']);
    // FedAvg of +1 and +3 per round (equal samples): +2 per round, 2 rounds, from the global each time.
    expect(members.map((m) => m.weights[0].values[0])).toEqual([14, 14]);
    expect(f.tasks.map((t) => t.round)).toEqual([6, 7, 8, 9]);
    expect(f.tasks.map((t) => t.start)).toEqual([10, 12, 10, 12]);
    // Member 1 is weighted by the global model alone; member 2 by the global model and member 1.
    const shaOf = (x: WeightSet) => boostingTaskFor([x], config).files[0].sha256;
    expect(f.tasks[0].boosting.members.map((m) => m.sha256)).toEqual([shaOf(w(10))]);
    expect(f.tasks[2].boosting.members.map((m) => m.sha256)).toEqual([shaOf(w(10)), shaOf(members[0].weights)]);
    // Every participant was offered the members, and every offer released.
    expect(f.offered).toHaveLength(8);
    expect(f.released()).toBe(8);
  });

  it('retries a failed round; a round failing every attempt ends boosting with the members finished before', async () => {
    const f = fakeRounds(new Set(['6/1', '8/1', '8/2', '8/3']));
    const members = await trainBoostedMembers(5, config, { weights: w(0), hash: 'g' }, f.rounds, 3);
    expect(members.map((m) => m.id)).toEqual(['global-b1']);
    expect(f.logs.filter((l) => l.msg === 'boosting round failed')).toHaveLength(4);
    expect(f.logs.at(-1)).toMatchObject({ level: 'warn', msg: 'boosting stopped: a round failed every attempt', fields: { member: 'global-b2', round: 8, kept: ['global-b1'] } });
    expect(f.released()).toBe(f.offered.length);
  });
});
