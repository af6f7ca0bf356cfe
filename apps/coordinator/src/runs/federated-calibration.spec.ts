import { generateSigningKeyPair, sign, toBase64 } from '@histofed/crypto';
import { encodeWeights, namedTensor, sha256Hex } from '@histofed/fl-core';
import {
  applyTemperature,
  chooseTemperature,
  entropyHistogram,
  expectedCalibrationError,
  mergeEntropyHistograms,
  reliabilityCounts,
  reviewThresholdFor,
  temperatureNll,
} from '@histofed/ml';
import { CalibrationEvents, CalibrationNllReport, calibrationNllSignedBytes, calibrationReviewSignedBytes, refusal } from '@histofed/protocol';
import { JsonLogger } from '../logging/json-logger';
import { FederatedCalibration, chooseTemperatures, globalMemberFor, nllAnswerProblem, reliabilityProblem } from './federated-calibration';
import { fakeSiteExchange } from './site-exchange.testing';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const GRID = [0.5, 1, 1.5, 2, 2.5, 3];
const spec = { kind: 'small-cnn', imageSize: 24, numClasses: 2 };
const layout = { numClasses: 2 };
const settings = { temperature: true, reviewRate: 0.25, grid: GRID, timeoutSeconds: 5 };
type Keys = ReturnType<typeof generateSigningKeyPair>;

/** Validation outputs of one model at one site: image rows (benign, malignant) and labels. */
interface Outputs {
  rows: Float32Array;
  labels: Int32Array;
}
const outputs = (pairs: [number, number][]): Outputs => ({
  rows: Float32Array.from(pairs.flatMap(([p]) => [p, 1 - p])),
  labels: Int32Array.from(pairs.map(([, y]) => y)),
});
// Over-confident global model: 0.9 for benign, right 3 times in 4, plus a few hesitant images.
const globalAtA = outputs([[0.9, 0], [0.9, 0], [0.9, 0], [0.9, 1], [0.9, 0], [0.6, 0], [0.6, 1], [0.2, 1]]);
const globalAtB = outputs([[0.9, 0], [0.9, 1], [0.9, 0], [0.9, 0], [0.3, 1], [0.55, 1]]);
// Under-confident personalized model of site a: always right at 0.6.
const personalAtA = outputs([[0.6, 0], [0.6, 0], [0.4, 1], [0.4, 1], [0.6, 0]]);

/** An honest site's answers, computed from its outputs as the site client does (libs/ml), signed. */
function honest(siteId: string, models: Record<string, Outputs>) {
  return (event: string, payload: { models: { id: string; model: { sha256: string }; temperature?: { stage1: number } }[]; grid?: number[] }, keys: Keys) => {
    if (event === CalibrationEvents.nll) {
      const reports = payload.models.map((m) => {
        const o = models[m.id];
        const nll = temperatureNll(o.rows, o.labels, layout, 'stage1', payload.grid!);
        return { id: m.id, sha256: m.model.sha256, images: o.labels.length, stage1: { nll: [...nll.nll], count: nll.count }, reliability: reliabilityCounts(o.rows, o.labels, 2) };
      }) as CalibrationNllReport[];
      return { ok: true, siteId, models: reports, signature: toBase64(sign(calibrationNllSignedBytes(RUN, siteId, reports), keys.secretKey)) };
    }
    const reports = payload.models.map((m) => {
      const o = models[m.id];
      const calibrated = applyTemperature(o.rows, layout, m.temperature!);
      return { id: m.id as 'global', sha256: m.model.sha256, images: o.labels.length, reliability: reliabilityCounts(calibrated, o.labels, 2), entropy: entropyHistogram(calibrated, o.labels, 2) };
    });
    return { ok: true, siteId, models: reports, signature: toBase64(sign(calibrationReviewSignedBytes(RUN, siteId, reports), keys.secretKey)) };
  };
}

type Answer = (event: string, payload: never, keys: Keys) => unknown;

function setUp(answers: Record<string, Answer>, connected = Object.keys(answers)) {
  const f = fakeSiteExchange<never>(Object.keys(answers), (siteId, event, payload, key) => answers[siteId](event, payload, key), connected);
  return { fitter: new FederatedCalibration(f.sessions, f.models, f.store, new JsonLogger('test', 'error')), sent: f.sent, offered: f.offered, released: f.released };
}

const weights = (v: number) => [namedTensor('dense/kernel', [2], [v, -v])];
const globalWeights = weights(1);
const shaOf = (w: ReturnType<typeof weights>) => sha256Hex(encodeWeights(w));

describe('FederatedCalibration', () => {
  it("picks the global temperature from every site's sums (as if pooled), each personalized one from its own site's, and the review threshold from the merged histograms", async () => {
    const a = honest('a', { global: globalAtA, personalized: personalAtA });
    const { fitter, sent, offered, released } = setUp({
      a,
      b: honest('b', { global: globalAtB }),
      silent: async () => refusal('site silent did not acknowledge coordinator:calibration-nll: operation has timed out', 'no-answer'),
      // Claims 9 images in its reliability bins for 8 images.
      inflated: (event, payload, k) => {
        const r = honest('inflated', { global: globalAtA })(event, payload, k) as { models: CalibrationNllReport[] };
        const models = r.models.map((m) => ({ ...m, reliability: { ...m.reliability, counts: m.reliability.counts.map((c, i) => (i === 9 ? c + 1 : c)) } }));
        return { ...r, models, signature: toBase64(sign(calibrationNllSignedBytes(RUN, 'inflated', models), k.secretKey)) };
      },
      forger: (event, payload, k) => ({ ...(honest('forger', { global: globalAtA })(event, payload, k) as object), signature: toBase64(sign(new Uint8Array([1]), k.secretKey)) }),
      impostor: (event, payload, k) => honest('a', { global: globalAtA })(event, payload, k),
    });
    const central = { labels: Int32Array.from([0, 0, 1, 1, 0]), probabilities: { global: Float32Array.from([0.95, 0.05, 0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.99, 0.01]) } };
    const out = await fitter.fit({
      runId: RUN,
      spec,
      stain: null,
      settings,
      globalMembers: [{ id: 'global', weights: globalWeights }],
      personalized: [{ id: 'a', weights: weights(2) }],
      central,
    });
    expect(out).toBeDefined();

    // Each site was offered the models it holds, to it alone; every offer was withdrawn at the end.
    expect(offered['a']).toEqual([shaOf(globalWeights), shaOf(weights(2))]);
    expect(offered['b']).toEqual([shaOf(globalWeights)]);
    expect(released()).toBe(6);
    // The second question goes only to the sites whose first answer was used.
    expect(sent.filter((s) => s.event === CalibrationEvents.review).map((s) => s.siteId).sort()).toEqual(['a', 'b']);

    const pooledRows = Float32Array.from([...globalAtA.rows, ...globalAtB.rows]);
    const pooledLabels = Int32Array.from([...globalAtA.labels, ...globalAtB.labels]);
    const pooled = chooseTemperature([temperatureNll(pooledRows, pooledLabels, layout, 'stage1', GRID)])!;
    const own = chooseTemperature([temperatureNll(personalAtA.rows, personalAtA.labels, layout, 'stage1', GRID)])!;
    expect(pooled.temperature).toBeGreaterThan(1); // over-confident
    expect(own.temperature).toBe(0.5); // under-confident
    const global = out!.readings.members.get('global')!;
    expect(global.calibration).toEqual(expect.objectContaining({ method: 'temperature', stage1: pooled.temperature, fittedOn: expect.stringMatching(/^federated: 2 sites, 14 validation images, grid 0.5..3/) }));
    expect(global.calibration?.eceBefore).toBeCloseTo(expectedCalibrationError(pooledLabels, pooledRows, 2), 5);
    const calibratedPooled = applyTemperature(pooledRows, layout, { stage1: pooled.temperature });
    expect(global.calibration?.eceAfter).toBeCloseTo(expectedCalibrationError(pooledLabels, calibratedPooled, 2), 5);
    const histogram = mergeEntropyHistograms([
      entropyHistogram(applyTemperature(globalAtA.rows, layout, { stage1: pooled.temperature }), globalAtA.labels, 2),
      entropyHistogram(applyTemperature(globalAtB.rows, layout, { stage1: pooled.temperature }), globalAtB.labels, 2),
    ]);
    const choice = reviewThresholdFor(histogram, 0.25)!;
    expect(global.review).toEqual({ measure: 'entropy', threshold: choice.threshold, targetReviewRate: 0.25, chosenOn: expect.stringMatching(/^pooled validation images of 2 sites \(14 images\)/) });
    const personal = out!.readings.members.get('a')!;
    expect(personal.calibration).toEqual(expect.objectContaining({ stage1: 0.5, fittedOn: expect.stringMatching(/^site a's validation images \(5\)/) }));
    expect(personal.review?.threshold).toBe(reviewThresholdFor(entropyHistogram(applyTemperature(personalAtA.rows, layout, { stage1: 0.5 }), personalAtA.labels, 2), 0.25)!.threshold);
    // The ensemble: members calibrated before averaging (T = 1 on the mean), the global model's review threshold.
    expect(out!.readings.ensemble?.calibration).toEqual(expect.objectContaining({ stage1: 1, fittedOn: expect.stringMatching(/applied before the members are averaged/) }));
    expect(out!.readings.ensemble?.review?.threshold).toBe(choice.threshold);

    // The report: the central test set measured (never fitted) with the chosen temperature.
    const report = out!.calibration!;
    expect(report.global.temperature).toEqual({ stage1: pooled.temperature });
    expect(report.global.eceBefore).toBeCloseTo(expectedCalibrationError(central.labels, central.probabilities.global, 2), 5);
    expect(report.global.eceAfter).toBeCloseTo(expectedCalibrationError(central.labels, applyTemperature(central.probabilities.global, layout, { stage1: pooled.temperature }), 2), 5);
    expect(report.global.reliabilityBefore).toHaveLength(10);
    expect(report.global.reliabilityBefore!.reduce((n, b) => n + b.count, 0)).toBe(5);
    expect(Object.keys(report.global.perSite).sort()).toEqual(['a', 'b']);
    expect(report.global.perSite['b'].eceBefore).toBeCloseTo(expectedCalibrationError(globalAtB.labels, globalAtB.rows, 2), 5);
    expect(report.personalized).toEqual({ a: expect.objectContaining({ temperature: { stage1: 0.5 } }) });
    expect(report.sites.answered).toEqual(['a', 'b']);
    expect(report.sites.refused).toEqual({
      silent: expect.stringMatching(/did not acknowledge/),
      inflated: 'global: its reliability bins count 9 images, not 8',
      forger: 'the signature does not verify with the enrolled signing key',
      impostor: 'answered as site a',
    });
    expect(out!.review).toEqual({
      measure: 'entropy',
      targetReviewRate: 0.25,
      global: { threshold: choice.threshold, images: 14, reviewRate: expect.closeTo(choice.reviewRate, 5), accuracyAll: expect.closeTo(choice.accuracyAll, 5), accuracyUnflagged: expect.closeTo(choice.accuracyUnflagged!, 5) },
      personalized: { a: expect.objectContaining({ images: 5, accuracyAll: 1 }) },
    });
  });

  it('with FedBN asks each site about its own global@<site> member; without temperature fitting only the review question (T = 1)', async () => {
    const { fitter, sent, offered } = setUp({ a: honest('a', { global: globalAtA }), b: honest('b', { global: globalAtB }) });
    const out = await fitter.fit({
      runId: RUN,
      spec,
      stain: null,
      settings: { temperature: false, reviewRate: 0.5, timeoutSeconds: 5 },
      globalMembers: [{ id: 'global@a', weights: weights(3) }, { id: 'global@b', weights: weights(4) }],
      personalized: [],
      central: null,
    });
    expect(offered).toEqual({ a: [shaOf(weights(3))], b: [shaOf(weights(4))] });
    expect(sent.map((s) => s.event)).toEqual([CalibrationEvents.review, CalibrationEvents.review]);
    expect((sent[0].payload as { models: { temperature: unknown }[] }).models[0].temperature).toEqual({ stage1: 1 });
    expect(out!.calibration).toBeUndefined();
    expect(out!.readings.members.get('global@a')).toEqual({ review: expect.objectContaining({ measure: 'entropy', targetReviewRate: 0.5 }) });
    expect(out!.readings.members.get('global@b')).toEqual(out!.readings.members.get('global@a'));
    expect(out!.readings.ensemble).toEqual({ review: expect.objectContaining({ chosenOn: expect.stringMatching(/^the global model's rule/) }) });
  });

  it('leaves the models uncalibrated when no site answers, and does not fail', async () => {
    const { fitter } = setUp({ silent: async () => refusal('no answer', 'no-answer') });
    const out = await fitter.fit({ runId: RUN, spec, stain: null, settings, globalMembers: [{ id: 'global', weights: globalWeights }], personalized: [], central: null });
    expect(out!.readings.members.get('global')).toEqual({});
    expect(out!.calibration).toEqual(expect.objectContaining({ global: expect.objectContaining({ temperature: null }), sites: { answered: [], refused: { silent: 'no answer' } } }));
    // Nobody connected: nothing to ask.
    const none = setUp({ a: honest('a', { global: globalAtA }) }, []);
    expect(await none.fitter.fit({ runId: RUN, spec, stain: null, settings, globalMembers: [{ id: 'global', weights: globalWeights }], personalized: [], central: null })).toBeUndefined();
  });
});

describe('calibration answer checks', () => {
  const asked = [{ id: 'global' as const, member: 'global', ref: { sha256: 'a'.repeat(64), totalBytes: 1, chunkBytes: 1, count: 1 } }];
  const report = (over: Partial<CalibrationNllReport> = {}): CalibrationNllReport => ({
    id: 'global',
    sha256: 'a'.repeat(64),
    images: 2,
    stage1: { nll: [1, 1, 1, 1, 1, 1], count: 2 },
    reliability: { counts: [0, 0, 0, 0, 0, 0, 0, 0, 1, 1], confidenceSums: [0, 0, 0, 0, 0, 0, 0, 0, 0.85, 0.95], correct: [0, 0, 0, 0, 0, 0, 0, 0, 1, 0] },
    ...over,
  });
  const problem = (r: CalibrationNllReport, twoStage = false) =>
    nllAnswerProblem('a', asked, { siteId: 'a', models: [r] }, GRID, twoStage ? { numClasses: 2, subtypeParents: [0, 1] } : { numClasses: 2 });

  it('refuses numbers that cannot be, with the reason', () => {
    expect(problem(report())).toBeNull();
    expect(problem(report({ stage1: { nll: [1, 1], count: 2 } }))).toBe('its global stage-1 sums are 2 for 6 temperatures');
    expect(problem(report({ stage1: { nll: [1, 1, 1, 1, 1, 1], count: 3 } }))).toBe('its global stage-1 sums count 3 of 2 images');
    expect(problem(report({ sha256: 'b'.repeat(64) }))).toBe('its global numbers are about model bbbbbbbbbbbb, not aaaaaaaaaaaa');
    expect(problem(report({ id: 'personalized' }))).toBe('it reports personalized, global were asked for');
    expect(problem(report({ subtype: { nll: [1, 1, 1, 1, 1, 1], count: 2 } }))).toBe('it reports a subtype head the model does not have');
    expect(problem(report({ subtype: { nll: [1, 1, 1, 1, 1, 1], count: 2 } }), true)).toBeNull();
    // A confidence of 0.99 summed into the (0.8, 0.9] bin; more correct than counted; under 1/k.
    expect(reliabilityProblem({ ...report().reliability, confidenceSums: [0, 0, 0, 0, 0, 0, 0, 0, 0.99, 0.95] }, 2, 2)).toMatch(/^reliability bin 8: summed confidence 0.99 does not fit 1 images in \(0.8, 0.9\]/);
    expect(reliabilityProblem({ ...report().reliability, correct: [0, 0, 0, 0, 0, 0, 0, 0, 2, 0] }, 2, 2)).toBe('reliability bin 8: 2 correct of 1 images');
    expect(reliabilityProblem({ counts: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0], confidenceSums: [0.05, 0, 0, 0, 0, 0, 0, 0, 0, 0], correct: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0] }, 1, 2)).toMatch(/bin 0/);
  });

  it('chooses the subtype temperature from the parties that report the subtype head', () => {
    const r = (stage1: number[], subtype?: number[]) => report({ stage1: { nll: stage1, count: 2 }, ...(subtype ? { subtype: { nll: subtype, count: 2 } } : {}) });
    const t = chooseTemperatures(GRID, [r([5, 4, 3, 2, 3, 4], [1, 2, 3, 4, 5, 6]), r([5, 4, 3, 2.5, 2, 4])]);
    expect(t).toEqual(expect.objectContaining({ stage1: 2, subtype: 0.5, images: 4 }));
    expect(chooseTemperatures(GRID, [])).toBeNull();
    expect(globalMemberFor([{ id: 'global@a' }, { id: 'global@b' }], 'b')).toBe('global@b');
    expect(globalMemberFor([{ id: 'global' }], 'b')).toBe('global');
    expect(globalMemberFor([{ id: 'global@a' }], 'b')).toBeUndefined();
  });
});
