import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromBase64, generateBoxKeyPair, generateSigningKeyPair, identitySigner, verify } from '@histofed/crypto';
import { ModelSpec, encodeWeights, sha256Hex } from '@histofed/fl-core';
import {
  applyTemperature,
  buildModelAsync,
  evaluateModelAsync,
  getWeights,
  initialStackingHead,
  selectBackend,
  stackingGradient,
  temperatureNll,
  twoStageImages,
  weightedMeanNll,
  weightingCandidates,
} from '@histofed/ml';
import {
  CalibrationEvents,
  DEFAULT_CHUNK_BYTES,
  EnsembleFitEvents,
  calibrationNllSignedBytes,
  calibrationReviewSignedBytes,
  chunkCount,
  ensembleStackingGradientSignedBytes,
  ensembleWeightsNllSignedBytes,
} from '@histofed/protocol';
import { Outbox } from './outbox';
import { SiteCalibration, nllReport, reviewReport, validationOutputs, weightingReport } from './site-calibration';
import type { SiteData } from './site-data';
import { SiteLogger } from './site-logger';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const spec: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1] };
const validation = twoStageImages(12, 16, 4);
const GRID = [0.5, 1, 2, 4];

beforeAll(async () => {
  await selectBackend('wasm');
});

async function tinyModel(seed: number) {
  const model = await buildModelAsync(spec, seed);
  const weights = getWeights(model);
  const { probabilities } = await evaluateModelAsync(model, validation, { subtypeParents: spec.subtypeParents });
  model.dispose();
  return { weights, probabilities };
}

describe('the site side of the federated calibration', () => {
  it("computes the numbers from a model's validation outputs: NLL sums over the grid, reliability and entropy counts", async () => {
    const { weights, probabilities } = await tinyModel(3);
    const o = await validationOutputs(spec, weights, validation);
    expect(Array.from(o.rows)).toEqual(Array.from(probabilities));
    expect(Array.from(o.subtypes!)).toEqual(Array.from(validation.subtypes!));
    const r = nllReport('global', 'a'.repeat(64), o, GRID);
    expect(r.images).toBe(12);
    expect(r.stage1).toEqual({ nll: temperatureNll(probabilities, validation.labels, spec, 'stage1', GRID).nll, count: 12 });
    expect(r.subtype).toEqual({ nll: temperatureNll(probabilities, validation.subtypes!, spec, 'subtype', GRID).nll, count: 12 });
    expect(r.reliability.counts.reduce((a, b) => a + b, 0)).toBe(12);
    const review = reviewReport('global', 'a'.repeat(64), o, { stage1: 2, subtype: 0.5 });
    expect(review.entropy.counts.reduce((a, b) => a + b, 0)).toBe(12);
    expect(review.entropy.errors.every((e, b) => e <= review.entropy.counts[b])).toBe(true);
    // Softer at T = 2: the stage-1 confidences move toward 1/2, so the summed confidence drops.
    const sum = (x: number[]) => x.reduce((a, b) => a + b, 0);
    expect(sum(review.reliability.confidenceSums)).toBeLessThan(sum(r.reliability.confidenceSums));
    expect(sum(review.reliability.correct)).toBe(sum(r.reliability.correct)); // the classes do not change
  });

  it('answers both questions signed, fetching each model once, and records in its outbox exactly the numbers it sent', async () => {
    const state = mkdtempSync(join(tmpdir(), 'hf-site-calibration-'));
    try {
      const keys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
      const signer = identitySigner('site-a', keys);
      const global = await tinyModel(3);
      const own = await tinyModel(4);
      const blobs = new Map([global.weights, own.weights].map((w) => {
        const bytes = encodeWeights(w);
        return [sha256Hex(bytes), bytes];
      }));
      const refOf = (w: typeof global.weights) => {
        const bytes = encodeWeights(w);
        return { sha256: sha256Hex(bytes), totalBytes: bytes.length, chunkBytes: DEFAULT_CHUNK_BYTES, count: chunkCount(bytes.length, DEFAULT_CHUNK_BYTES) };
      };
      const fetched: string[] = [];
      const data = { validation: async () => validation, backboneDir: undefined } as unknown as SiteData;
      const site = new SiteCalibration('site-a', data, signer, new Outbox(state, false), new SiteLogger('site-a'), async (ref) => {
        fetched.push(ref.sha256);
        return blobs.get(ref.sha256)!;
      });
      const models = [{ id: 'global' as const, model: refOf(global.weights) }, { id: 'personalized' as const, model: refOf(own.weights) }];
      const nll = await site.answerNll({ runId: RUN, model: spec, stainNormalization: null, grid: GRID, models });
      if (!nll.ok) throw new Error(nll.error);
      expect(nll.models.map((m) => [m.id, m.sha256])).toEqual(models.map((m) => [m.id, m.model.sha256]));
      expect(verify(calibrationNllSignedBytes(RUN, 'site-a', nll.models), fromBase64(nll.signature), keys.sign.publicKey)).toBe(true);
      const review = await site.answerReview({ runId: RUN, model: spec, stainNormalization: null, models: models.map((m) => ({ ...m, temperature: { stage1: 1.5, subtype: 1 } })) });
      if (!review.ok) throw new Error(review.error);
      expect(verify(calibrationReviewSignedBytes(RUN, 'site-a', review.models), fromBase64(review.signature), keys.sign.publicKey)).toBe(true);
      expect(fetched).toEqual(models.map((m) => m.model.sha256)); // kept between the questions

      const outbox = readFileSync(join(state, 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(outbox.map((m) => m.event)).toEqual([CalibrationEvents.nll, CalibrationEvents.review]);
      expect(outbox[0].payload).toEqual(JSON.parse(JSON.stringify({ runId: RUN, ...nll })));
      // Numbers only, besides the ids, the models' hashes and the signature.
      const strings: string[] = [];
      const walk = (v: unknown): void => {
        if (typeof v === 'string') strings.push(v);
        else if (Array.isArray(v)) v.forEach(walk);
        else if (v && typeof v === 'object') Object.values(v).forEach(walk);
        else expect(['number', 'boolean']).toContain(typeof v);
      };
      outbox.forEach((m) => walk(m.payload));
      expect(new Set(strings)).toEqual(new Set([RUN, 'site-a', 'global', 'personalized', ...models.map((m) => m.model.sha256), nll.signature, review.signature]));

      // A request that fails validation, or a model that cannot be fetched, is refused with the reason.
      expect(await site.answerNll({ runId: RUN, model: spec, grid: [], models })).toEqual({ ok: false, code: 'invalid-message', error: expect.stringMatching(/^coordinator:calibration-nll: grid/) });
      const missing = { id: 'global' as const, model: { ...refOf(global.weights), sha256: 'f'.repeat(64) } };
      const failing = new SiteCalibration('site-a', data, signer, new Outbox(state, false), new SiteLogger('site-a'), async () => {
        throw new Error('blob ffff is not offered');
      });
      expect(await failing.answerNll({ runId: RUN, model: spec, grid: GRID, models: [missing] })).toEqual({
        ok: false,
        code: 'internal-error',
        error: 'coordinator:calibration-nll at site site-a: blob ffff is not offered',
      });
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  it('answers the ensemble weighting question (issue 16): NLL sums of candidate weightings of calibrated members, signed, numbers only', async () => {
    const state = mkdtempSync(join(tmpdir(), 'hf-site-weighting-'));
    try {
      const keys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
      const signer = identitySigner('site-a', keys);
      const a = await tinyModel(5);
      const b = await tinyModel(6);
      const refOf = (w: typeof a.weights) => {
        const bytes = encodeWeights(w);
        return { sha256: sha256Hex(bytes), totalBytes: bytes.length, chunkBytes: DEFAULT_CHUNK_BYTES, count: chunkCount(bytes.length, DEFAULT_CHUNK_BYTES) };
      };
      const blobs = new Map([a.weights, b.weights].map((w) => [refOf(w).sha256, encodeWeights(w)]));
      const data = { validation: async () => validation, backboneDir: undefined } as unknown as SiteData;
      const site = new SiteCalibration('site-a', data, signer, new Outbox(state, false), new SiteLogger('site-a'), async (ref) => blobs.get(ref.sha256)!);
      const candidates = weightingCandidates(2);
      const members = [
        { id: 'global', model: refOf(a.weights), temperature: { stage1: 2 } },
        { id: 'global-r1', model: refOf(b.weights) },
      ];
      const ack = await site.answerWeights({ runId: RUN, model: spec, stainNormalization: null, members, candidates });
      if (!ack.ok) throw new Error(ack.error);
      // The sums are those of the members' outputs, the first calibrated with its temperature.
      const expected = weightedMeanNll([applyTemperature(a.probabilities, spec, { stage1: 2 }), b.probabilities], validation.labels, spec, candidates);
      expect(ack.report.count).toBe(12);
      expect(ack.report.members).toEqual(members.map((m) => m.model.sha256));
      ack.report.nll.forEach((v, i) => expect(v).toBeCloseTo(expected.nll[i], 4));
      expect(weightingReport([{ sha256: 'x', outputs: await validationOutputs(spec, b.weights, validation) }, { sha256: 'y', outputs: await validationOutputs(spec, b.weights, validation) }], [[0.5, 0.5]]).nll[0]).toBeCloseTo(expected.nll[candidates.length - 1], 4);
      expect(verify(ensembleWeightsNllSignedBytes(RUN, 'site-a', ack.report), fromBase64(ack.signature), keys.sign.publicKey)).toBe(true);
      const outbox = readFileSync(join(state, 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(outbox.map((m) => m.event)).toEqual([EnsembleFitEvents.nll]);
      expect(outbox[0].payload).toEqual(JSON.parse(JSON.stringify({ runId: RUN, ...ack })));
      expect(Object.keys(outbox[0].payload.report).sort()).toEqual(['count', 'members', 'nll']);
      expect(outbox[0].payload.report.nll.every((v: unknown) => typeof v === 'number')).toBe(true);
      // A personalized member (other sites cannot score it) is refused by validation.
      expect(await site.answerWeights({ runId: RUN, model: spec, members: [members[0], { id: 'site-b', model: refOf(b.weights) }], candidates })).toEqual({
        ok: false,
        code: 'invalid-message',
        error: expect.stringMatching(/^coordinator:ensemble-weights-nll: members.1.id/),
      });
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  it('answers the stacking question (issue 16): the gradient of the head on calibrated members, signed, outputs computed once per fit, a compact outbox line', async () => {
    const state = mkdtempSync(join(tmpdir(), 'hf-site-stacking-'));
    try {
      const keys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
      const signer = identitySigner('site-a', keys);
      const a = await tinyModel(7);
      const b = await tinyModel(8);
      const refOf = (w: typeof a.weights) => {
        const bytes = encodeWeights(w);
        return { sha256: sha256Hex(bytes), totalBytes: bytes.length, chunkBytes: DEFAULT_CHUNK_BYTES, count: chunkCount(bytes.length, DEFAULT_CHUNK_BYTES) };
      };
      const blobs = new Map([a.weights, b.weights].map((w) => [refOf(w).sha256, encodeWeights(w)]));
      let loads = 0;
      const fetched: string[] = [];
      const data = {
        validation: async () => {
          loads++;
          return validation;
        },
        backboneDir: undefined,
      } as unknown as SiteData;
      const site = new SiteCalibration('site-a', data, signer, new Outbox(state, false), new SiteLogger('site-a'), async (ref) => {
        fetched.push(ref.sha256);
        return blobs.get(ref.sha256)!;
      });
      const members = [
        { id: 'global', model: refOf(a.weights), temperature: { stage1: 2, subtype: 0.5 } },
        { id: 'global-r1', model: refOf(b.weights) },
      ];
      const rows = [applyTemperature(a.probabilities, spec, { stage1: 2, subtype: 0.5 }), b.probabilities];
      const request = (head: 'stage1' | 'subtype', step: number, params: { coefficients: number[][]; intercept: number[] }) => ({ runId: RUN, model: spec, stainNormalization: null, members, head, step, params });

      const start = initialStackingHead(2, 2);
      const first = await site.answerStacking(request('stage1', 1, start));
      if (!first.ok) throw new Error(first.error);
      const expected = stackingGradient(rows, validation.labels, spec, start, 'stage1');
      expect(first.report).toEqual(expect.objectContaining({ members: members.map((m) => m.model.sha256), head: 'stage1', count: 12 }));
      expect(first.report.nll).toBeCloseTo(expected.nll, 4);
      first.report.coefficients.flat().forEach((v, i) => expect(v).toBeCloseTo(expected.coefficients.flat()[i], 4));
      first.report.intercept.forEach((v, i) => expect(v).toBeCloseTo(expected.intercept[i], 4));
      expect(verify(ensembleStackingGradientSignedBytes(RUN, 'site-a', first.report), fromBase64(first.signature), keys.sign.publicKey)).toBe(true);

      // Further steps (other parameters, the subtype head) reuse the members' outputs: no fetch, no decoding.
      const moved = { coefficients: [[0.7, -0.1, 0.4, 0], [0, 0.5, -0.2, 0.6]], intercept: [0.1, -0.1] };
      const second = await site.answerStacking(request('stage1', 2, moved));
      if (!second.ok) throw new Error(second.error);
      expect(second.report.nll).toBeCloseTo(stackingGradient(rows, validation.labels, spec, moved, 'stage1').nll, 4);
      const subtypeStart = initialStackingHead(2, 4);
      const subtype = await site.answerStacking(request('subtype', 1, subtypeStart));
      if (!subtype.ok) throw new Error(subtype.error);
      expect(subtype.report.count).toBe(12);
      expect(subtype.report.coefficients).toHaveLength(4);
      expect(subtype.report.coefficients[0]).toHaveLength(8);
      expect(subtype.report.nll).toBeCloseTo(stackingGradient(rows, validation.subtypes!, spec, subtypeStart, 'subtype').nll, 4);
      expect(fetched).toEqual(members.map((m) => m.model.sha256));
      expect(loads).toBe(2); // one validation load per member model, once

      // The outbox: one line per answer (recorded before it leaves), the gradient as size, magnitude and the signed bytes' hash.
      const outbox = readFileSync(join(state, 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(outbox.map((m) => m.event)).toEqual([EnsembleFitEvents.stacking, EnsembleFitEvents.stacking, EnsembleFitEvents.stacking]);
      const line = outbox[0].payload;
      expect(Object.keys(line).sort()).toEqual(['ok', 'report', 'runId', 'signature', 'siteId', 'step']);
      expect(line.report).toEqual({
        members: first.report.members,
        head: 'stage1',
        nll: first.report.nll,
        count: 12,
        gradient: {
          numbers: 10,
          maxAbs: Math.max(...[...first.report.coefficients.flat(), ...first.report.intercept].map(Math.abs)),
          signedBytesSha256: createHash('sha256').update(ensembleStackingGradientSignedBytes(RUN, 'site-a', first.report)).digest('hex'),
        },
      });
      expect(line.signature).toBe(first.signature);
      expect(outbox[2].payload.report.gradient.numbers).toBe(4 * 8 + 4);

      // Refusals: a head that does not fit the members, a member other sites cannot score.
      expect(await site.answerStacking(request('subtype', 1, start))).toEqual({
        ok: false,
        code: 'invalid-message',
        error: expect.stringMatching(/^coordinator:ensemble-stacking-gradient: params: the subtype head of 2 members of 4 classes is 4 x 8, not 2 x 4/),
      });
      expect(await site.answerStacking({ ...request('stage1', 1, start), members: [members[0], { id: 'site-b', model: refOf(b.weights) }] })).toEqual(
        expect.objectContaining({ ok: false, code: 'invalid-message', error: expect.stringMatching(/members.1.id/) }),
      );
      // A site whose validation images carry no subtype label cannot answer for the subtype head.
      const unlabelled = { ...validation, subtypes: undefined };
      const other = new SiteCalibration('site-a', { validation: async () => unlabelled, backboneDir: undefined } as unknown as SiteData, signer, new Outbox(state, false), new SiteLogger('site-a'), async (ref) => blobs.get(ref.sha256)!);
      expect(await other.answerStacking(request('subtype', 1, subtypeStart))).toEqual({
        ok: false,
        code: 'internal-error',
        error: 'coordinator:ensemble-stacking-gradient at site site-a: the validation images have no subtype labels',
      });
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});
