import { encodedWeightsLength, namedTensor } from '@histofed/fl-core';
import { BOX_OVERHEAD_LENGTH, generateBoxKeyPair, generateSigningKeyPair, identitySigner, seal, toBase64 } from '@histofed/crypto';
import { encodeUpdateEnvelope, prepareUpdate } from '@histofed/protocol';
import { JsonLogger } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import type { ContributionRecord, SiteRecord } from '../persistence/records';
import { featureMomentsProblem } from './contribution-checks';
import { ContributionService, UPDATE_HEADER_ALLOWANCE_BYTES } from './contribution.service';
import { CoordinatorKeys } from './coordinator-keys';
import { RoundCollection } from './round-collection';

const RUN = '00000000-0000-4000-8000-000000000001';
const BASE = 'b'.repeat(64);
const weights = [namedTensor('w', [2], [0, 0])];

/** The parts of the store the contribution service uses, in memory; its writes wait for `gate`. */
function memoryStore(site: SiteRecord) {
  const contributions: Omit<ContributionRecord, 'id' | 'receivedAt'>[] = [];
  let gate: Promise<void> = Promise.resolve();
  let fail: Error | null = null;
  const store = {
    getSite: async (id: string) => (id === site.siteId ? site : null),
    getRun: async (id: string) => (id === RUN ? ({ id } as never) : null),
    hasContributionNonce: async (siteId: string, nonce: string) => contributions.some((c) => c.siteId === siteId && c.nonce === nonce),
    putModel: async () => 'm'.repeat(64),
    addContribution: async (c: Omit<ContributionRecord, 'id' | 'receivedAt'>) => {
      await gate;
      if (fail) throw fail;
      contributions.push(c);
      return { ...c, id: contributions.length, receivedAt: new Date().toISOString() } as unknown as ContributionRecord;
    },
  };
  return {
    store: store as unknown as CoordinatorStore,
    contributions,
    holdWrites: () => {
      let release!: () => void;
      gate = new Promise((r) => (release = r));
      return release;
    },
    failWrites: (e: Error) => (fail = e),
  };
}

function setUp() {
  const coordinator = generateBoxKeyPair();
  const keys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
  const site: SiteRecord = {
    siteId: 'site-1',
    status: 'approved',
    boxPublicKey: toBase64(keys.box.publicKey),
    signPublicKey: toBase64(keys.sign.publicKey),
  } as SiteRecord;
  const mem = memoryStore(site);
  const logger = new JsonLogger('test', 'error');
  const service = new ContributionService(mem.store, logger, new CoordinatorKeys(coordinator, generateSigningKeyPair()));
  const update = () => {
    const plaintext = encodeUpdateEnvelope({
      header: { runId: RUN, round: 1, kind: 'round', siteId: 'site-1', baseModelHash: BASE, numSamples: 7, metrics: {} },
      weights: [namedTensor('w', [2], [0.5, -0.5])],
    });
    const sealed = seal(plaintext, coordinator.publicKey, keys.box.secretKey);
    const p = prepareUpdate({ runId: RUN, round: 1, kind: 'round', siteId: 'site-1', nonce: toBase64(sealed.nonce) }, sealed.ciphertext, identitySigner('site-1', keys));
    return { message: { ...p.message, uploadId: 'u1' }, sealed: p.sealed };
  };
  return { service, mem, update };
}

describe('contribution service', () => {
  it('an update whose record is being written when the round closes is both recorded accepted and in the aggregate', async () => {
    const { service, mem, update } = setUp();
    const c = new RoundCollection(RUN, 1, 'round', new Set(['site-1', 'site-2']), BASE, weights, 0, 60_000);
    service.openCollection(c);
    const release = mem.holdWrites();
    const u = update();
    const ack = service.receive('site-1', u.message, u.sealed);
    // The deadline (or an administrator) closes the round while the record is being written.
    await new Promise((r) => setImmediate(r));
    c.close('deadline passed before the site answered');
    release();
    expect(await ack).toEqual({ ok: true });
    const outcome = await c.outcome;
    expect(outcome.results.map((r) => r.siteId)).toEqual(['site-1']);
    expect(mem.contributions.filter((x) => x.status === 'accepted').map((x) => x.siteId)).toEqual(['site-1']);
  });

  it('an update that cannot be recorded is not in the aggregate either', async () => {
    const { service, mem, update } = setUp();
    const c = new RoundCollection(RUN, 1, 'round', new Set(['site-1']), BASE, weights, 0, 60_000);
    service.openCollection(c);
    mem.failWrites(new Error('database unavailable'));
    const u = update();
    await expect(service.receive('site-1', u.message, u.sealed)).rejects.toThrow('database unavailable');
    const outcome = await c.outcome;
    expect(outcome.results).toEqual([]);
    expect(outcome.missing['site-1']).toMatch(/could not be recorded: database unavailable/);
  });

  it('refuses a replayed update and one for a closed round, recording why', async () => {
    const { service, mem, update } = setUp();
    const c = new RoundCollection(RUN, 1, 'round', new Set(['site-1']), BASE, weights, 0, 60_000);
    service.openCollection(c);
    const u = update();
    expect(await service.receive('site-1', u.message, u.sealed)).toEqual({ ok: true });
    const again = await service.receive('site-1', u.message, u.sealed);
    expect(again).toEqual({ ok: false, error: expect.stringMatching(/nonce already used/) });
    const late = update();
    expect((await service.receive('site-1', late.message, late.sealed)).ok).toBe(false);
    expect(mem.contributions.map((x) => x.status)).toEqual(['accepted', 'rejected', 'rejected']);
  });

  it("lets a site upload only as much as an open round it takes part in expects: the model's size, not the global cap", async () => {
    const { service } = setUp();
    expect(service.uploadLimitFor('site-1')).toBe(0); // no round open
    const big = [namedTensor('w', [1000], new Float32Array(1000))];
    const c = new RoundCollection(RUN, 1, 'round', new Set(['site-1']), BASE, big, 0, 60_000);
    service.openCollection(c);
    const limit = service.uploadLimitFor('site-1');
    expect(limit).toBe(encodedWeightsLength(big) + UPDATE_HEADER_ALLOWANCE_BYTES + BOX_OVERHEAD_LENGTH);
    expect(limit).toBeLessThan(4000 + 1100 * 1024); // far below HISTOFED_MAX_MODEL_BYTES (1 GiB)
    expect(service.uploadLimitFor('site-2')).toBe(0); // not a participant
    // A real sealed update of this model fits.
    const sealedLength = seal(encodeUpdateEnvelope({ header: { runId: RUN, round: 1, kind: 'round', siteId: 'site-1', baseModelHash: BASE, numSamples: 7, metrics: { loss: 0.5 } }, weights: big }), generateBoxKeyPair().publicKey, generateBoxKeyPair().secretKey).ciphertext.length;
    expect(sealedLength).toBeLessThanOrEqual(limit);
    c.close('test over');
    await c.outcome;
    await new Promise((r) => setImmediate(r));
    expect(service.uploadLimitFor('site-1')).toBe(0);
  });

  it('refuses an update whose feature moments are impossible (a negative variance), naming why', () => {
    expect(featureMomentsProblem({ count: 2, dim: 1, mean: [1], secondMoment: [2] })).toBeNull();
    expect(featureMomentsProblem({ count: 2, dim: 1, mean: [3], secondMoment: [2] })).toMatch(/moments.*variance|negative/i);
    expect(featureMomentsProblem({ count: 2, dim: 2, mean: [0, 0], secondMoment: [1, 0.5, 0.1, 1] })).toMatch(/symmetric/);
  });
});
