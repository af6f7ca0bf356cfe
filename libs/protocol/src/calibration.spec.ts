import {
  CALIBRATION_MAX_GRID,
  CalibrationEvents,
  calibrationNllAckSchema,
  calibrationNllRequestSchema,
  calibrationNllSignedBytes,
  calibrationReviewAckSchema,
  calibrationReviewRequestSchema,
  calibrationReviewSignedBytes,
  coordinatorToSite,
  describeZodError,
  validateCoordinatorToSiteAck,
} from './index';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const SHA = 'a'.repeat(64);
const ref = { sha256: SHA, totalBytes: 100, chunkBytes: 4 * 1024 * 1024, count: 1 };
const signature = Buffer.alloc(64, 7).toString('base64');
const spec = { kind: 'small-cnn', imageSize: 24, numClasses: 2 };
const reliability = {
  counts: [0, 0, 0, 0, 0, 1, 0, 0, 0, 2],
  confidenceSums: [0, 0, 0, 0, 0, 0.55, 0, 0, 0, 1.9],
  correct: [0, 0, 0, 0, 0, 1, 0, 0, 0, 2],
};
const nllReport = { id: 'global', sha256: SHA, images: 3, stage1: { nll: [2.1, 1.5, 1.8], count: 3 }, reliability };
const entropy = { counts: new Array(100).fill(0).map((_, b) => (b < 3 ? 1 : 0)), errors: new Array(100).fill(0) };
const reason = (schema: { safeParse: (v: unknown) => { success: boolean; error?: unknown } }, v: unknown) => {
  const r = schema.safeParse(v);
  return r.success ? null : describeZodError(r.error as never);
};

describe('calibration messages', () => {
  it('are part of the socket contract, a question and its answer each', () => {
    expect(coordinatorToSite[CalibrationEvents.nll].request).toBe(calibrationNllRequestSchema);
    expect(coordinatorToSite[CalibrationEvents.review].ack).toBe(calibrationReviewAckSchema);
    expect(validateCoordinatorToSiteAck(CalibrationEvents.nll, { ok: false, error: 'no validation images', code: 'internal-error' }, 'ack').ok).toBe(true);
  });

  it('take a request with the run, the model spec, a bounded grid and at most the two models a site holds', () => {
    const request = { runId: RUN, model: spec, grid: [0.5, 1, 2], models: [{ id: 'global', model: ref }, { id: 'personalized', model: ref }] };
    expect(calibrationNllRequestSchema.parse(request)).toEqual({ ...request, stainNormalization: null });
    expect(reason(calibrationNllRequestSchema, { ...request, grid: new Array(CALIBRATION_MAX_GRID + 1).fill(1) })).toMatch(/^grid: /);
    expect(reason(calibrationNllRequestSchema, { ...request, grid: [0] })).toMatch(/^grid.0: /);
    expect(reason(calibrationNllRequestSchema, { ...request, models: [{ id: 'global', model: ref }, { id: 'global', model: ref }] })).toMatch(/models: a model is listed twice/);
    expect(reason(calibrationNllRequestSchema, { ...request, models: [{ id: 'site-2', model: ref }] })).toMatch(/^models.0.id: /);
    expect(reason(calibrationReviewRequestSchema, { runId: RUN, model: spec, models: [{ id: 'global', model: ref, temperature: { stage1: 1.5 } }] })).toBeNull();
    expect(reason(calibrationReviewRequestSchema, { runId: RUN, model: spec, models: [{ id: 'global', model: ref, temperature: { stage1: 1000 } }] })).toMatch(/temperature.stage1/);
  });

  it('take answers of fixed-size arrays of numbers only, refusing anything else with the field', () => {
    const nll = { ok: true, siteId: 'site-1', models: [nllReport], signature };
    expect(reason(calibrationNllAckSchema, nll)).toBeNull();
    expect(reason(calibrationNllAckSchema, { ...nll, models: [{ ...nllReport, stage1: { nll: [1, -2], count: 3 } }] })).toMatch(/models.0.stage1.nll.1/);
    expect(reason(calibrationNllAckSchema, { ...nll, models: [{ ...nllReport, reliability: { ...reliability, counts: [1, 2] } }] })).toMatch(/models.0.reliability.counts/);
    expect(reason(calibrationNllAckSchema, { ...nll, models: [{ ...nllReport, reliability: { ...reliability, correct: [0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0] } }] })).toMatch(/models.0.reliability.correct.0/);
    // No room for anything but numbers: an extra field (say, file names) is refused.
    expect(reason(calibrationNllAckSchema, { ...nll, models: [{ ...nllReport, files: ['SOB_B_A-14-22549AB-40-001.png'] }] })).toMatch(/models.0: .*files/);
    expect(reason(calibrationNllAckSchema, { ...nll, probabilities: [0.9, 0.1] })).toMatch(/probabilities/);
    const review = { ok: true, siteId: 'site-1', models: [{ id: 'global', sha256: SHA, images: 3, reliability, entropy }], signature };
    expect(reason(calibrationReviewAckSchema, review)).toBeNull();
    expect(reason(calibrationReviewAckSchema, { ...review, models: [{ ...review.models[0], entropy: { counts: [3], errors: [0] } }] })).toMatch(/models.0.entropy.counts/);
  });

  it('sign every number: a changed number, model or run changes the signed bytes', () => {
    const bytes = Buffer.from(calibrationNllSignedBytes(RUN, 'site-1', [nllReport as never]));
    const changed = { ...nllReport, stage1: { nll: [2.1, 1.5, 1.9], count: 3 } };
    expect(Buffer.from(calibrationNllSignedBytes(RUN, 'site-1', [changed as never])).equals(bytes)).toBe(false);
    expect(Buffer.from(calibrationNllSignedBytes(RUN, 'site-2', [nllReport as never])).equals(bytes)).toBe(false);
    const withBins = { ...nllReport, reliability: { ...reliability, correct: [0, 0, 0, 0, 0, 0, 0, 0, 0, 2] } };
    expect(Buffer.from(calibrationNllSignedBytes(RUN, 'site-1', [withBins as never])).equals(bytes)).toBe(false);
    const review = { id: 'global' as const, sha256: SHA, images: 3, reliability, entropy };
    const a = Buffer.from(calibrationReviewSignedBytes(RUN, 'site-1', [review]));
    expect(Buffer.from(calibrationReviewSignedBytes(RUN, 'site-1', [{ ...review, entropy: { ...entropy, errors: entropy.counts } }])).equals(a)).toBe(false);
    // The two questions' signatures cannot stand for each other (distinct domains).
    expect(a.includes(Buffer.from('histofed-calibration-review-v1'))).toBe(true);
    expect(bytes.includes(Buffer.from('histofed-calibration-nll-v1'))).toBe(true);
  });
});
