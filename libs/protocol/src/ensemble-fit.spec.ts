import {
  ENSEMBLE_FIT_MAX_CANDIDATES,
  ENSEMBLE_STACKING_MAX_PARAM,
  EnsembleFitEvents,
  coordinatorToSite,
  describeZodError,
  ensembleWeightsNllAckSchema,
  ensembleWeightsNllRequestSchema,
  ensembleStackingGradientAckSchema,
  ensembleStackingGradientRequestSchema,
  ensembleStackingGradientSignedBytes,
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

describe('the stacking gradient messages (issue 16)', () => {
  const twoStage = { kind: 'small-cnn', imageSize: 24, numClasses: 2, subtypeParents: [0, 0, 1] };
  // The stage-1 head of two members of two classes: 2 x 4 coefficients, 2 intercepts.
  const params = { coefficients: [[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]], intercept: [0, 0] };
  const stacking = { runId: RUN, model: twoStage, members: request.members, head: 'stage1', step: 1, params };
  const gradient = { members: ['a'.repeat(64), 'b'.repeat(64)], head: 'stage1', nll: 3.5, count: 5, coefficients: [[-1.2, 0.3, -0.8, 0.1], [1.2, -0.3, 0.8, -0.1]], intercept: [0.4, -0.4] };
  const ack = (r: object = {}, extra: object = {}) => ({ ok: true, siteId: 'site-1', report: { ...gradient, ...r }, signature, ...extra });

  it('is a channel of the socket contract, and a well-formed request and answer validate', () => {
    expect(coordinatorToSite[EnsembleFitEvents.stacking].request).toBe(ensembleStackingGradientRequestSchema);
    expect(coordinatorToSite[EnsembleFitEvents.stacking].ack).toBe(ensembleStackingGradientAckSchema);
    expect(reason(ensembleStackingGradientRequestSchema, stacking)).toBeNull();
    expect(ensembleStackingGradientRequestSchema.parse(stacking).stainNormalization).toBeNull();
    // The subtype head of a two-stage model: 3 subtypes x 2 members·3.
    const subtype = { coefficients: [[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1]], intercept: [0, 0, 0] };
    expect(reason(ensembleStackingGradientRequestSchema, { ...stacking, head: 'subtype', params: subtype })).toBeNull();
    expect(reason(ensembleStackingGradientAckSchema, ack())).toBeNull();
    expect(reason(ensembleStackingGradientAckSchema, { ok: false, error: 'no validation image has a subtype label', code: 'internal-error' })).toBeNull();
  });

  it('refuses requests whose head does not fit the model and members, unbounded parameters, members other sites cannot score', () => {
    const bad = (patch: object) => reason(ensembleStackingGradientRequestSchema, { ...stacking, ...patch });
    expect(bad({ head: 'subtype' })).toMatch(/the subtype head of 2 members of 3 classes is 3 x 6, not 2 x 4/);
    expect(bad({ model: spec, head: 'subtype' })).toMatch(/the model has no subtype head/);
    expect(bad({ members: [request.members[0]] })).toMatch(/2 x 2, not 2 x 4/);
    expect(bad({ params: { ...params, intercept: [0, 0, 0] } })).toMatch(/2 coefficient rows for 3 intercepts/);
    expect(bad({ params: { ...params, coefficients: [[0.5, 0, 0.5, 0], [0, 0.5, 0]] } })).toMatch(/rows of different lengths/);
    expect(bad({ params: { ...params, intercept: [ENSEMBLE_STACKING_MAX_PARAM + 1, 0] } })).toMatch(/params.intercept.0/);
    expect(bad({ params: { ...params, intercept: [Number.NaN, 0] } })).toMatch(/params.intercept.0/);
    expect(bad({ head: 'both' })).toMatch(/head/);
    expect(bad({ step: 0 })).toMatch(/step/);
    expect(bad({ members: [request.members[0], { id: 'global@site-1', model: ref('b') }] })).toMatch(/members.1.id/);
    expect(bad({ labels: [0, 1] })).toMatch(/labels/);
  });

  it('an answer is numbers only, of a consistent shape: no extra field, finite, a positive count', () => {
    const bad = (r: object, extra: object = {}) => reason(ensembleStackingGradientAckSchema, ack(r, extra));
    expect(bad({ probabilities: [[0.3, 0.7]] })).toMatch(/probabilities/);
    expect(bad({}, { labels: [1, 0] })).toMatch(/labels/);
    expect(bad({ nll: -1 })).toMatch(/report.nll/);
    expect(bad({ nll: Number.POSITIVE_INFINITY })).toMatch(/report.nll/);
    expect(bad({ count: 0 })).toMatch(/report.count/);
    expect(bad({ intercept: [0.4, Number.NaN] })).toMatch(/report.intercept.1/);
    expect(bad({ coefficients: [[-1.2, 0.3, -0.8], [1.2, -0.3, 0.8]] })).toMatch(/3 coefficient columns for 2 members of 2 classes/);
    expect(bad({ intercept: [0.4, -0.4, 0] })).toMatch(/2 coefficient rows for 3 intercepts/);
    expect(bad({ head: 'stage2' })).toMatch(/report.head/);
  });

  it('signs every number: changing any of them changes the signed bytes', () => {
    const hex = (siteId: string, r: object) => Buffer.from(ensembleStackingGradientSignedBytes(RUN, siteId, { ...gradient, ...r } as never)).toString('hex');
    const bytes = hex('site-1', {});
    for (const [siteId, patch] of [
      ['site-2', {}],
      ['site-1', { count: 6 }],
      ['site-1', { nll: 3.6 }],
      ['site-1', { head: 'subtype' }],
      ['site-1', { intercept: [0.4, -0.41] }],
      ['site-1', { coefficients: [[-1.2, 0.3, -0.8, 0.1], [1.2, -0.3, 0.8, -0.11]] }],
      ['site-1', { members: [gradient.members[1], gradient.members[0]] }],
    ] as const) {
      expect(hex(siteId, patch)).not.toBe(bytes);
    }
    // Not a weighting answer's bytes either (another domain).
    expect(Buffer.from(ensembleWeightsNllSignedBytes(RUN, 'site-1', report)).toString('hex')).not.toBe(bytes);
  });
});
