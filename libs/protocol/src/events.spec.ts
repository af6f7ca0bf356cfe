import nacl from 'tweetnacl';
import {
  CalibrationEvents,
  EnsembleFitEvents,
  ChunkEvents,
  CoordinatorEvents,
  FinalModelEvents,
  ProgressEvents,
  PruningEvents,
  SECAGG_MAX_NEIGHBOURS,
  SecAggEvents,
  StainEvents,
  describeZodError,
  featureMomentsWireSchema,
  stainStatsAckSchema,
  stainStatsSignedBytes,
  SiteEvents,
  authenticate,
  coordinatorToSite,
  defaultThreshold,
  secAggParamsSchema,
  siteToCoordinator,
  thresholdFits,
  validateCoordinatorToSiteAck,
  validateSiteToCoordinatorAck,
} from './index';

describe('the socket contract', () => {
  it('lists every event the sides exchange', () => {
    expect(Object.keys(coordinatorToSite).sort()).toEqual(
      [CoordinatorEvents.train, SecAggEvents.advertise, SecAggEvents.shareKeys, SecAggEvents.unmask, StainEvents.stats, PruningEvents.channelStats, FinalModelEvents.offer, CalibrationEvents.nll, CalibrationEvents.review, EnsembleFitEvents.nll, EnsembleFitEvents.stacking].sort(),
    );
    expect(Object.keys(siteToCoordinator).sort()).toEqual(
      [SiteEvents.challenge, SiteEvents.hello, SiteEvents.update, SiteEvents.taskFailed, ChunkEvents.uploadChunk, ChunkEvents.fetchChunk, ProgressEvents.progress].sort(),
    );
  });

  it('validates an ack against its own event’s schema', () => {
    expect(validateCoordinatorToSiteAck(CoordinatorEvents.train, { ok: true }, 'train ack')).toEqual({ ok: true, value: { ok: true } });
    // { ok: true } is a train ack, not a share-keys ack (which carries the shares).
    const v = validateCoordinatorToSiteAck(SecAggEvents.shareKeys, { ok: true }, 'share-keys ack');
    expect(v).toEqual({ ok: false, reason: expect.stringMatching(/^share-keys ack: .*shares/) });
    expect(validateSiteToCoordinatorAck(SiteEvents.challenge, { ok: true, challenge: 'x' }, 'challenge ack').ok).toBe(false);
  });

  it('carries refusal codes; an unknown code reads as none, a missing one is fine', () => {
    const ack = (raw: unknown) => validateSiteToCoordinatorAck(SiteEvents.hello, raw, 'hello ack');
    expect(ack({ ok: false, error: 'x is revoked', code: 'revoked' })).toEqual({ ok: true, value: { ok: false, error: 'x is revoked', code: 'revoked' } });
    const future = ack({ ok: false, error: 'new reason', code: 'from-the-future' });
    expect(future.ok && future.value).toEqual({ ok: false, error: 'new reason' });
    expect(future.ok && !future.value.ok && future.value.code).toBeUndefined();
    expect(ack({ ok: false, error: 'old coordinator' })).toEqual({ ok: true, value: { ok: false, error: 'old coordinator' } });
    expect(ack({ ok: false, code: 'revoked' }).ok).toBe(false);
  });

  it('authenticate hands the site the coordinator’s refusal code', async () => {
    const keys = nacl.sign.keyPair();
    const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
    const signer = {
      siteId: 'site-a',
      boxPublicKey: b64(nacl.box.keyPair().publicKey),
      signPublicKey: b64(keys.publicKey),
      sign: (m: Uint8Array) => nacl.sign.detached(m, keys.secretKey),
    };
    const emit = async (event: string) =>
      event === SiteEvents.challenge
        ? { ok: true, challenge: Buffer.alloc(32, 7).toString('base64') }
        : { ok: false, error: 'site site-a is awaiting approval', code: 'pending-approval' };
    expect(await authenticate(emit, signer, { backend: 'none', software: 't', trainSamples: 1, validationSamples: 0 })).toEqual({
      ok: false,
      error: 'site site-a is awaiting approval',
      code: 'pending-approval',
    });
  });
});

describe('secure-aggregation limits', () => {
  it('threshold: a strict majority of the k + 1 holders, at most k', () => {
    expect([2, 3, 4, 6, 10].map((k) => [k, defaultThreshold(k)])).toEqual([[2, 2], [3, 3], [4, 3], [6, 4], [10, 6]]);
    for (const k of [2, 3, 4, 6, 10, SECAGG_MAX_NEIGHBOURS]) {
      expect(thresholdFits(k, defaultThreshold(k))).toBe(true);
      expect(thresholdFits(k, defaultThreshold(k) - 1)).toBe(false);
      expect(thresholdFits(k, k)).toBe(true);
      expect(thresholdFits(k, k + 1)).toBe(false);
    }
    expect(thresholdFits(4, 3.5)).toBe(false);
  });

  it('the wire params refuse what the cryptography would refuse', () => {
    const params = { neighbourCount: 4, threshold: 3, clipRange: 1, vectorLength: 10 };
    expect(secAggParamsSchema.safeParse(params).success).toBe(true);
    expect(secAggParamsSchema.safeParse({ ...params, threshold: 2 }).success).toBe(false);
    expect(secAggParamsSchema.safeParse({ ...params, threshold: 5 }).success).toBe(false);
    expect(secAggParamsSchema.safeParse({ ...params, neighbourCount: SECAGG_MAX_NEIGHBOURS + 1, threshold: 200 }).success).toBe(false);
    expect(secAggParamsSchema.safeParse({ ...params, clipRange: 2 ** -31 }).success).toBe(false);
  });
});

describe('stain statistics message', () => {
  it('accepts numbers only, in the shape of a fit, and refuses anything else with the field', () => {
    const ok = {
      ok: true,
      siteId: 'site-1',
      images: 12,
      stats: { method: 'macenko', stainMatrix: [[0.6, 0.7, 0.4], [0.2, 0.8, 0.5]], maxConcentrations: [1.9, 1.0] },
      signature: Buffer.alloc(64, 1).toString('base64'),
    };
    expect(stainStatsAckSchema.safeParse(ok).success).toBe(true);
    const reason = (x: unknown) => {
      const r = stainStatsAckSchema.safeParse(x);
      return r.success ? '' : describeZodError(r.error);
    };
    expect(reason({ ...ok, stats: { ...ok.stats, stainMatrix: [[0.6, 0.7, Number.NaN], [0.2, 0.8, 0.5]] } })).toMatch(/stats/);
    expect(reason({ ...ok, stats: { ...ok.stats, patientId: 'p1' } })).toMatch(/patientId|unrecognized/i);
    expect(reason({ ...ok, pixels: [1, 2, 3] })).toMatch(/pixels|unrecognized/i);
    expect(reason({ ...ok, images: 0 })).toMatch(/images/);
  });

  it('signs every number: changing one breaks the signature bytes', () => {
    const stats = { method: 'reinhard', space: 'cie-lab', mean: [70, 10, -10], std: [10, 5, 5], pixels: 100 } as const;
    const a = stainStatsSignedBytes('6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e', 'site-1', 5, { ...stats, mean: [...stats.mean], std: [...stats.std] });
    const b = stainStatsSignedBytes('6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e', 'site-1', 5, { ...stats, mean: [70, 10, -10], std: [10, 5, 5.0001] });
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
  });
});

describe('feature moments on the wire', () => {
  it('must be dim numbers of mean and dim x dim of second moment, at most 128 wide', () => {
    const ok = { count: 3, dim: 2, mean: [0.5, 1], secondMoment: [1, 0.2, 0.2, 2] };
    expect(featureMomentsWireSchema.safeParse(ok).success).toBe(true);
    const reason = (x: unknown) => {
      const r = featureMomentsWireSchema.safeParse(x);
      return r.success ? '' : describeZodError(r.error);
    };
    expect(reason({ ...ok, mean: [1] })).toMatch(/mean: must have dim = 2 numbers, got 1/);
    expect(reason({ ...ok, secondMoment: [1, 2, 3] })).toMatch(/secondMoment: must have dim x dim = 4 numbers, got 3/);
    expect(reason({ ...ok, dim: 129 })).toMatch(/dim/);
    expect(reason({ ...ok, perImage: [[1, 2]] })).toMatch(/perImage|unrecognized/i);
  });
});
