import { sign, toBase64 } from '@histofed/crypto';
import type { ModelSpec } from '@histofed/fl-core';
import { encodeWeights, sha256Hex } from '@histofed/fl-core';
import { buildModel, filterCounts, getWeights, multiplyAddsOf, selectBackend, setWeights } from '@histofed/ml';
import { PruningEvents, channelStatsSignedBytes, refusal } from '@histofed/protocol';
import { JsonLogger } from '../logging/json-logger';
import { FederatedPruning, pruningApplied, pruningStep } from './federated-pruning';
import { fakeSiteExchange, type SigningKeys } from './site-exchange.testing';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const spec: ModelSpec = { kind: 'se-cnn', imageSize: 24, numClasses: 2 };

/** Gates where channel c of block b is worth (c % 7) / 7 at every site, except that `low` channels are 0. */
const gates = (low: number[] = []) => filterCounts(spec).map((n, b) => Array.from({ length: n }, (_, c) => (b === 0 && low.includes(c) ? 0 : (c % 7) / 7)));

describe('federated pruning (coordinator)', () => {
  beforeAll(async () => {
    await selectBackend('cpu');
  });

  it('keeps the share of multiply-adds asked for, the channels of highest score, with the pruned shapes in the spec', () => {
    const model = buildModel(spec, 3);
    const weights = getWeights(model);
    model.dispose();
    const scores = gates();
    const step = pruningStep(spec, weights, 0.5, scores);
    expect(step.filters.before).toEqual([16, 32, 64]);
    expect(step.multiplyAdds.after).toBeLessThanOrEqual(0.5 * step.multiplyAdds.before);
    expect(step.multiplyAdds.after).toBe(multiplyAddsOf(step.spec));
    expect(step.spec.options).toEqual(expect.objectContaining({ filters1: step.filters.after[0], filters3: step.filters.after[2] }));
    // The pruned weights fit the pruned spec ...
    const pruned = buildModel(step.spec, 1);
    try {
      setWeights(pruned, step.weights);
    } finally {
      pruned.dispose();
    }
    // ... and block 1 kept the filters of its highest-scoring channels: every kept filter is an
    // original one, and no dropped channel scores above a kept one.
    const column = (t: { values: Float32Array; shape: readonly number[] }, c: number) => Array.from(t.values).filter((_, i) => i % t.shape[3] === c).join();
    const before = weights.find((t) => t.name === 'conv1/kernel')!;
    const after = step.weights.find((t) => t.name === 'conv1/kernel')!;
    expect(after.shape).toEqual([3, 3, 3, step.filters.after[0]]);
    const original = Array.from({ length: 16 }, (_, c) => column(before, c));
    const kept = Array.from({ length: step.filters.after[0] }, (_, j) => original.indexOf(column(after, j)));
    expect(kept.every((c) => c >= 0)).toBe(true);
    const dropped = original.map((_, c) => c).filter((c) => !kept.includes(c));
    expect(Math.min(...kept.map((c) => scores[0][c]))).toBeGreaterThanOrEqual(Math.max(...dropped.map((c) => scores[0][c])));
    // Keeping the whole model is refused: a step prunes.
    expect(() => pruningStep(spec, weights, 0, scores)).toThrow(/fraction/);
  });

  it("averages the sites' SE gates by image count, leaving out every answer that cannot be used, with the reason", async () => {
    const answers: Record<string, (payload: { weights: { sha256: string }; round: number }, key: SigningKeys) => unknown> = {
      a: (p, k) => signed('a', p, k, 30, gates()),
      b: (p, k) => signed('b', p, k, 10, gates([0, 1, 2])),
      forger: (p, k) => ({ ...(signed('forger', p, k, 10, gates()) as object), signature: toBase64(sign(new Uint8Array([1]), k.secretKey)) }),
      impostor: (p, k) => signed('a', p, k, 10, gates()),
      stale: (p, k) => signed('stale', { ...p, weights: { sha256: 'f'.repeat(64) } }, k, 10, gates()),
      misshapen: (p, k) => signed('misshapen', p, k, 10, gates().slice(0, 2)),
      silent: () => refusal('site silent did not acknowledge coordinator:channel-stats: operation has timed out', 'no-answer'),
    };
    const f = fakeSiteExchange<{ weights: { sha256: string }; round: number }>(Object.keys(answers), (siteId, _event, payload, key) => answers[siteId](payload, key));
    const pruning = new FederatedPruning(f.sessions, f.models, f.store, new JsonLogger('test', 'error'));
    const model = buildModel(spec, 3);
    const weights = getWeights(model);
    model.dispose();
    const out = await pruning.gateStatistics({ runId: RUN, round: 2, spec, weights, stainNormalization: null, participants: Object.keys(answers) });
    expect(f.sent.every((s) => s.event === PruningEvents.channelStats)).toBe(true);
    expect(f.sent[0].payload.weights.sha256).toBe(sha256Hex(encodeWeights(weights)));
    expect(out.used).toEqual([
      { siteId: 'a', images: 30 },
      { siteId: 'b', images: 10 },
    ]);
    expect(Object.keys(out.refused).sort()).toEqual(['forger', 'impostor', 'misshapen', 'silent', 'stale']);
    expect(out.refused['forger']).toMatch(/signature does not verify/);
    expect(out.refused['impostor']).toMatch(/answered as site a/);
    expect(out.refused['stale']).toMatch(/statistics of model ffffffffffff/);
    expect(out.refused['misshapen']).toMatch(/blocks of \[16, 32\] channels, the model has \[16, 32, 64\]/);
    // Image-weighted: channel 1 of block 1 is 1/7 at a (30 images) and 0 at b (10 images).
    expect(out.combined?.images).toBe(40);
    expect(out.combined?.gates[0][1]).toBeCloseTo(((1 / 7) * 30) / 40, 6);
  });
});

describe('a pruning step after a coordinator restart', () => {
  it('is applied once: when the current global model is no longer the one the previous round ended with, it was', () => {
    const rounds = [
      { round: 1, status: 'completed', modelHash: 'm1' },
      { round: 2, status: 'failed', modelHash: null },
    ];
    expect(pruningApplied(rounds, 2, 'm1')).toBe(false); // round 1's model is current: prune
    expect(pruningApplied(rounds, 2, 'pruned')).toBe(true); // the pruned model is current: go on with it
    expect(pruningApplied([{ round: 1, status: 'failed', modelHash: null }], 2, 'x')).toBe(false);
  });
});

function signed(siteId: string, p: { weights: { sha256: string }; round: number }, k: SigningKeys, images: number, g: number[][]) {
  return {
    ok: true,
    siteId,
    sha256: p.weights.sha256,
    images,
    gates: g,
    signature: toBase64(sign(channelStatsSignedBytes(RUN, p.round, siteId, p.weights.sha256, images, g), k.secretKey)),
  };
}
