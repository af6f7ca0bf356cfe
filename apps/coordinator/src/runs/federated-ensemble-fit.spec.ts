import { generateSigningKeyPair, sign, toBase64 } from '@histofed/crypto';
import { encodeWeights, namedTensor, sha256Hex } from '@histofed/fl-core';
import { chooseWeighting, combinerSchema, weightedMeanNll, weightingCandidates } from '@histofed/ml';
import { EnsembleFitEvents, EnsembleWeightsNllReport, ensembleWeightsNllSignedBytes, refusal } from '@histofed/protocol';
import { JsonLogger } from '../logging/json-logger';
import { FederatedEnsembleFit, combineWeightingAnswers, ensembleFitAnswerProblem, ensembleWeights, isSharedMember } from './federated-ensemble-fit';
import { fakeSiteExchange } from './site-exchange.testing';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const layout = { numClasses: 2 };
const weights = (v: number) => [namedTensor('dense/kernel', [2], [v, -v])];
const shaOf = (w: ReturnType<typeof weights>) => sha256Hex(encodeWeights(w));

/** Hand-made validation outputs of one site: a sharp member and a noisy one (2 classes). */
function siteRows(seed: number) {
  const labels = Int32Array.from({ length: 8 }, (_, i) => (i + seed) % 2);
  const sharp = new Float32Array(16);
  const noisy = new Float32Array(16);
  labels.forEach((y, i) => {
    const p = 0.8 + 0.02 * ((i + seed) % 5);
    sharp[2 * i + y] = p;
    sharp[2 * i + 1 - y] = 1 - p;
    const q = i % 3 === 0 ? 0.3 : 0.6;
    noisy[2 * i + y] = q;
    noisy[2 * i + 1 - y] = 1 - q;
  });
  return { rows: [sharp, noisy], labels };
}

type Answer = (payload: { candidates: number[][]; members: { model: { sha256: string } }[] }, key: ReturnType<typeof generateSigningKeyPair>, siteId: string) => unknown;

function setUp(answers: Record<string, Answer>) {
  const f = fakeSiteExchange<Parameters<Answer>[0]>(Object.keys(answers), (siteId, _event, payload, key) => answers[siteId](payload, key, siteId));
  return { fitter: new FederatedEnsembleFit(f.sessions, f.models, f.store, new JsonLogger('test', 'error')), sent: f.sent, offered: f.offered, released: f.released };
}

/** An honest site: the NLL sums of its hand-made rows, signed. */
const honest = (seed: number): Answer => (payload, key, siteId) => {
  const { rows, labels } = siteRows(seed);
  const { nll, count } = weightedMeanNll(rows, labels, layout, payload.candidates);
  const report: EnsembleWeightsNllReport = { members: payload.members.map((m) => m.model.sha256), nll: [...nll], count };
  return { ok: true, siteId, report, signature: toBase64(sign(ensembleWeightsNllSignedBytes(RUN, siteId, report), key.secretKey)) };
};

describe('the federated ensemble weighting (issue 16): pure parts', () => {
  it('knows the members every site holds', () => {
    expect(['global', 'global-r1', 'global-r12', 'global@site-1', 'site-1', 'global-r0'].map(isSharedMember)).toEqual([true, true, true, false, false, false]);
  });

  it('adds the sites\' sums and picks what pooled rows pick; reports the uniform mean\'s NLL next to the chosen one', () => {
    const candidates = weightingCandidates(2);
    const sites = [siteRows(0), siteRows(1), siteRows(2)];
    const reports = sites.map((s) => weightedMeanNll(s.rows, s.labels, layout, candidates));
    const pooledRows = [0, 1].map((m) => Float32Array.from(sites.flatMap((s) => Array.from(s.rows[m]))));
    const pooledLabels = Int32Array.from(sites.flatMap((s) => Array.from(s.labels)));
    const pooled = weightedMeanNll(pooledRows, pooledLabels, layout, candidates);
    const got = combineWeightingAnswers(candidates, reports)!;
    expect(got.index).toBe(chooseWeighting(candidates, pooled.nll).index);
    expect(got.images).toBe(24);
    expect(got.weights[0]).toBeGreaterThan(got.weights[1]); // the sharp member earns more weight
    expect(got.weightedNll).toBeCloseTo(pooled.nll[got.index] / 24, 10);
    const uniform = candidates.findIndex((c) => c[0] === 0.5);
    expect(got.meanNll).toBeCloseTo(pooled.nll[uniform] / 24, 10);
    expect(got.weightedNll).toBeLessThanOrEqual(got.meanNll!);
    expect(combineWeightingAnswers(candidates, [])).toBeNull();
  });

  it('members other sites cannot score keep the mean\'s share 1/M; the shared ones split the rest as fitted', () => {
    const w = ensembleWeights(['global', 'global-r2', 'site-1', 'site-2'], ['global', 'global-r2'], [0.8, 0.2]);
    expect(w[0]).toBeCloseTo(0.4, 12);
    expect(w[1]).toBeCloseTo(0.1, 12);
    expect(w[2]).toBeCloseTo(0.25, 12);
    expect(w[3]).toBeCloseTo(0.25, 12);
    expect(w.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(ensembleWeights(['global', 'global-r1'], ['global', 'global-r1'], [0.3, 0.7])).toEqual([0.3, 0.7]);
  });

  it('refuses answers that cannot be right', () => {
    const shas = ['a'.repeat(64), 'b'.repeat(64)];
    const report = { members: shas, nll: [1, 2, 3], count: 2 };
    expect(ensembleFitAnswerProblem('site-1', shas, 3, { siteId: 'site-1', report })).toBeNull();
    expect(ensembleFitAnswerProblem('site-1', shas, 3, { siteId: 'site-2', report })).toMatch(/answered as site site-2/);
    expect(ensembleFitAnswerProblem('site-1', shas, 3, { siteId: 'site-1', report: { ...report, members: [shas[1], shas[0]] } })).toMatch(/other members/);
    expect(ensembleFitAnswerProblem('site-1', shas, 4, { siteId: 'site-1', report })).toMatch(/3 sums for 4 candidates/);
    expect(ensembleFitAnswerProblem('site-1', shas, 3, { siteId: 'site-1', report: { ...report, nll: [1, 2, 57] } })).toMatch(/exceeds what 2 images can give/);
  });
});

describe('the federated ensemble weighting (issue 16): the exchange', () => {
  const members = [
    { id: 'global', weights: weights(1) },
    { id: 'global-r2', weights: weights(2) },
    { id: 'site-1', weights: weights(3) },
  ];

  it('asks every site about the shared members only, leaves out refused and malformed answers, and stores weights summing to 1', async () => {
    const { fitter, sent, offered, released } = setUp({
      'site-1': honest(0),
      'site-2': honest(1),
      // Malformed: too few sums (a well-signed answer to another question).
      'site-3': (payload, key, siteId) => {
        const report = { members: payload.members.map((m) => m.model.sha256), nll: [1, 2], count: 3 };
        return { ok: true, siteId, report, signature: toBase64(sign(ensembleWeightsNllSignedBytes(RUN, siteId, report), key.secretKey)) };
      },
      // Signed with another key.
      'site-4': (payload, _key, siteId) => (honest(2)(payload, generateSigningKeyPair(), siteId)),
      'site-5': () => refusal('the site has no validation images', 'internal-error'),
    });
    const result = (await fitter.fit({ runId: RUN, spec: { kind: 'small-cnn', imageSize: 16, numClasses: 2 }, stain: null, members, temperatures: new Map([['global', { stage1: 1.5 }]]), timeoutSeconds: 5 }))!;
    // The questions: the two shared members (never the personalized one), with the global model's temperature.
    expect(sent.every((s) => s.event === EnsembleFitEvents.nll)).toBe(true);
    const payload = sent[0].payload as unknown as { members: { id: string; temperature?: unknown }[]; candidates: number[][] };
    expect(payload.members).toEqual([expect.objectContaining({ id: 'global', temperature: { stage1: 1.5 } }), expect.not.objectContaining({ temperature: expect.anything() })]);
    expect(payload.members.map((m) => m.id)).toEqual(['global', 'global-r2']);
    expect(payload.candidates).toEqual(weightingCandidates(2));
    expect(offered['site-1']).toEqual([shaOf(weights(1)), shaOf(weights(2))]);
    expect(released()).toBe(5);
    // What was used and what was left out, with the reasons.
    expect(result.summary.sites.answered).toEqual(['site-1', 'site-2']);
    expect(Object.keys(result.summary.sites.refused).sort()).toEqual(['site-3', 'site-4', 'site-5']);
    expect(result.summary.sites.refused['site-3']).toMatch(/2 sums for 11 candidates/);
    expect(result.summary.sites.refused['site-4']).toMatch(/signature does not verify/);
    expect(result.summary.sites.refused['site-5']).toMatch(/no validation images/);
    // The choice: what the two honest sites' pooled rows choose; the personalized member keeps 1/3.
    const candidates = weightingCandidates(2);
    const expected = combineWeightingAnswers(candidates, [siteRows(0), siteRows(1)].map((s) => weightedMeanNll(s.rows, s.labels, layout, candidates)))!;
    const combiner = combinerSchema.parse(result.combiner);
    expect(combiner).toEqual(expect.objectContaining({ kind: 'weighted-mean', fittedOn: expect.stringMatching(/^federated: 2 sites, 16 validation images, 11 candidate weightings/) }));
    const w = result.combiner!.weights;
    expect(w[0]).toBeCloseTo((2 / 3) * expected.weights[0], 12);
    expect(w[1]).toBeCloseTo((2 / 3) * expected.weights[1], 12);
    expect(w[2]).toBeCloseTo(1 / 3, 12);
    expect(result.summary).toEqual(
      expect.objectContaining({ combiner: 'weighted-mean', fittedMembers: ['global', 'global-r2'], candidates: 11, validation: { images: 16, meanNll: expect.any(Number), weightedNll: expect.any(Number) } }),
    );
    expect(result.summary.validation.weightedNll!).toBeLessThanOrEqual(result.summary.validation.meanNll!);
  });

  it('without a usable answer keeps the mean; with fewer than two shared members asks nothing', async () => {
    const none = setUp({ 'site-1': () => refusal('busy', 'busy') });
    const result = (await none.fitter.fit({ runId: RUN, spec: { kind: 'small-cnn', imageSize: 16, numClasses: 2 }, stain: null, members, temperatures: new Map(), timeoutSeconds: 5 }))!;
    expect(result.combiner).toBeUndefined();
    expect(result.summary.combiner).toBe('mean-probabilities');
    expect(Object.values(result.summary.weights).every((v) => Math.abs(v - 1 / 3) < 1e-6)).toBe(true);
    const one = setUp({ 'site-1': honest(0) });
    expect(await one.fitter.fit({ runId: RUN, spec: { kind: 'small-cnn', imageSize: 16, numClasses: 2 }, stain: null, members: [members[0], members[2]], temperatures: new Map(), timeoutSeconds: 5 })).toBeUndefined();
    expect(one.sent).toHaveLength(0);
  });
});
