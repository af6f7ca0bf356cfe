import {
  ENSEMBLE_FIT_MAX_CANDIDATES,
  EnsembleFitEvents,
  coordinatorToSite,
  describeZodError,
  ensembleWeightsNllAckSchema,
  ensembleWeightsNllRequestSchema,
  ensembleWeightsNllSignedBytes,
} from './index';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const ref = (c: string) => ({ sha256: c.repeat(64), totalBytes: 100, chunkBytes: 4 * 1024 * 1024, count: 1 });
const signature = Buffer.alloc(64, 7).toString('base64');
const spec = { kind: 'small-cnn', imageSize: 24, numClasses: 2 };
const request = {
  runId: RUN,
  model: spec,
  members: [
    { id: 'global', model: ref('a'), temperature: { stage1: 1.5 } },
    { id: 'global-r2', model: ref('b') },
  ],
  candidates: [
    [1, 0],
    [0.5, 0.5],
    [0, 1],
  ],
};
const report = { members: ['a'.repeat(64), 'b'.repeat(64)], nll: [3.2, 2.9, 3.5], count: 5 };
const reason = (schema: { safeParse: (v: unknown) => { success: boolean; error?: unknown } }, v: unknown) => {
  const r = schema.safeParse(v);
  return r.success ? null : describeZodError(r.error as never);
};

describe('the ensemble weighting messages (issue 16)', () => {
  it('is a channel of the socket contract, and a well-formed request and answer validate', () => {
    expect(coordinatorToSite[EnsembleFitEvents.nll].request).toBe(ensembleWeightsNllRequestSchema);
    expect(reason(ensembleWeightsNllRequestSchema, request)).toBeNull();
    expect(ensembleWeightsNllRequestSchema.parse(request).stainNormalization).toBeNull();
    expect(reason(ensembleWeightsNllAckSchema, { ok: true, siteId: 'site-1', report, signature })).toBeNull();
    expect(reason(ensembleWeightsNllAckSchema, { ok: false, error: 'no validation images', code: 'internal-error' })).toBeNull();
  });

  it('refuses requests it cannot answer: members other sites cannot score, shapes, sums, sizes', () => {
    const bad = (patch: object) => reason(ensembleWeightsNllRequestSchema, { ...request, ...patch });
    expect(bad({ members: [request.members[0], { id: 'site-1', model: ref('b') }] })).toMatch(/members.1.id: a member every site holds/);
    expect(bad({ members: [request.members[0], { id: 'global@site-1', model: ref('b') }] })).toMatch(/members.1.id/);
    expect(bad({ members: [request.members[0]] })).toMatch(/^members: /);
    expect(bad({ members: [request.members[0], { ...request.members[0] }] })).toMatch(/a member is listed twice/);
    expect(bad({ candidates: [[0.5, 0.4]] })).toMatch(/must sum to 1/);
    expect(bad({ candidates: [[1, 0, 0]] })).toMatch(/one weight per member/);
    expect(bad({ candidates: [[-0.5, 1.5]] })).toMatch(/candidates.0.0/);
    expect(bad({ candidates: Array.from({ length: ENSEMBLE_FIT_MAX_CANDIDATES + 1 }, () => [0.5, 0.5]) })).toMatch(/^candidates: /);
    expect(bad({ images: ['x.png'] })).toMatch(/images/);
  });

  it('an answer is numbers only: no extra field, finite non-negative sums, a positive count', () => {
    const bad = (r: object, extra: object = {}) => reason(ensembleWeightsNllAckSchema, { ok: true, siteId: 'site-1', report: { ...report, ...r }, signature, ...extra });
    expect(bad({ files: ['SOB_B_A-14-22549AB-40-001.png'] })).toMatch(/files/);
    expect(bad({ nll: [1, -2, 3] })).toMatch(/report.nll.1/);
    expect(bad({ nll: [1, Number.NaN, 3] })).toMatch(/report.nll.1/);
    expect(bad({ count: 0 })).toMatch(/report.count/);
    expect(bad({ members: ['not a hash', 'b'.repeat(64)] })).toMatch(/report.members.0/);
    expect(bad({}, { probabilities: [0.3, 0.7] })).toMatch(/probabilities/);
  });

  it('signs every number: changing any of them changes the signed bytes', () => {
    const bytes = Buffer.from(ensembleWeightsNllSignedBytes(RUN, 'site-1', report)).toString('hex');
    expect(Buffer.from(ensembleWeightsNllSignedBytes(RUN, 'site-2', report)).toString('hex')).not.toBe(bytes);
    expect(Buffer.from(ensembleWeightsNllSignedBytes(RUN, 'site-1', { ...report, count: 6 })).toString('hex')).not.toBe(bytes);
    expect(Buffer.from(ensembleWeightsNllSignedBytes(RUN, 'site-1', { ...report, nll: [3.2, 2.9, 3.6] })).toString('hex')).not.toBe(bytes);
    expect(Buffer.from(ensembleWeightsNllSignedBytes(RUN, 'site-1', { ...report, members: [report.members[1], report.members[0]] })).toString('hex')).not.toBe(bytes);
  });
});
