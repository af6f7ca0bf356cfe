import { generateSigningKeyPair, sign, toBase64 } from '@histofed/crypto';
import { encodeWeights, namedTensor, sha256Hex } from '@histofed/fl-core';
import {
  LogisticHead,
  OutputLayout,
  STACKING_EPS,
  combineMembers,
  combinerProblem,
  combinerSchema,
  fitStackingHead,
  initialStackingHead,
  mulberry32,
  stackingGradient,
} from '@histofed/ml';
import {
  ENSEMBLE_STACKING_MAX_FEATURE,
  EnsembleFitEvents,
  EnsembleStackingGradientReport,
  ensembleStackingGradientAckSchema,
  ensembleStackingGradientRequestSchema,
  ensembleStackingGradientSignedBytes,
  refusal,
} from '@histofed/protocol';
import { JsonLogger } from '../logging/json-logger';
import {
  FederatedStackingFit,
  StackingStepAnswer,
  fitHeadWithSites,
  stackingAnswerProblem,
  stackingGradientNorm,
  sumStackingAnswers,
} from './federated-stacking-fit';
import { fakeSiteExchange } from './site-exchange.testing';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';

const rng = mulberry32;

/** `m` members' rows of `n` images (width columns each: numClasses, then the subtypes), each block a distribution. */
function memberRows(n: number, m: number, layout: OutputLayout, seed: number): Float32Array[] {
  const r = rng(seed);
  const k = layout.numClasses;
  const s = layout.subtypeParents?.length ?? 0;
  const width = k + s;
  return Array.from({ length: m }, () => {
    const out = new Float32Array(n * width);
    for (let i = 0; i < n; i++) {
      for (const [offset, size] of [[0, k], [k, s]] as const) {
        let sum = 0;
        for (let j = 0; j < size; j++) sum += (out[i * width + offset + j] = Math.exp(3 * (r() - 0.5)));
        for (let j = 0; j < size; j++) out[i * width + offset + j] /= sum;
      }
    }
    return out;
  });
}

/** Labels drawn from each row's block (stage 1 or the subtypes). */
function sample(rows: Float32Array, layout: OutputLayout, head: 'stage1' | 'subtype', seed: number): Int32Array {
  const r = rng(seed);
  const k = layout.numClasses;
  const width = k + (layout.subtypeParents?.length ?? 0);
  const [offset, size] = head === 'stage1' ? [0, k] : [k, width - k];
  return Int32Array.from({ length: rows.length / width }, (_, i) => {
    let u = r();
    for (let j = 0; j < size - 1; j++) if ((u -= rows[i * width + offset + j]) < 0) return j;
    return size - 1;
  });
}

interface SiteData {
  rows: Float32Array[];
  labels: Int32Array;
  subtypes?: Int32Array;
}

/** `sites` sites' rows of two members, split from one pool (returned too). */
function federation(layout: OutputLayout, sizes: readonly number[], seed: number, truth?: LogisticHead): { sites: SiteData[]; pooled: SiteData } {
  const n = sizes.reduce((a, b) => a + b, 0);
  const rows = memberRows(n, 2, layout, seed);
  const stage1Source = truth ? combineMembers(rows, layout, { kind: 'stacking', stage1: truth }) : rows[0];
  const labels = sample(stage1Source, layout, 'stage1', seed + 1);
  const subtypes = layout.subtypeParents ? sample(rows[1], layout, 'subtype', seed + 2) : undefined;
  const width = layout.numClasses + (layout.subtypeParents?.length ?? 0);
  const sites: SiteData[] = [];
  let start = 0;
  for (const size of sizes) {
    sites.push({
      rows: rows.map((r) => r.slice(start * width, (start + size) * width)),
      labels: labels.slice(start, start + size),
      ...(subtypes ? { subtypes: subtypes.slice(start, start + size) } : {}),
    });
    start += size;
  }
  return { sites, pooled: { rows, labels, ...(subtypes ? { subtypes } : {}) } };
}

const honestAnswer = (site: SiteData, layout: OutputLayout, head: 'stage1' | 'subtype') => (params: LogisticHead): StackingStepAnswer => ({
  report: stackingGradient(site.rows, head === 'stage1' ? site.labels : site.subtypes!, layout, params, head),
});

describe('the federated stacking fit (issue 16): pure parts', () => {
  const shas = ['a'.repeat(64), 'b'.repeat(64)];
  const layout = { numClasses: 2 };
  const site = federation(layout, [12], 3).sites[0];
  const report = (params = initialStackingHead(2, 2)): EnsembleStackingGradientReport => ({ members: shas, head: 'stage1', ...stackingGradient(site.rows, site.labels, layout, params) });

  it('the protocol\'s bound on a feature covers libs/ml\'s probability floor', () => {
    expect(-Math.log(STACKING_EPS)).toBeLessThanOrEqual(ENSEMBLE_STACKING_MAX_FEATURE);
  });

  it('takes an honest answer, and refuses answers that cannot be right', () => {
    const r = report();
    const problem = (patch: Partial<EnsembleStackingGradientReport>, siteId = 'site-1', head: 'stage1' | 'subtype' = 'stage1', classes = 2) =>
      stackingAnswerProblem('site-1', shas, head, classes, { siteId, report: { ...r, ...patch } });
    expect(problem({})).toBeNull();
    expect(problem({}, 'site-2')).toMatch(/answered as site site-2/);
    expect(problem({ members: [shas[1], shas[0]] })).toMatch(/other members/);
    expect(problem({ head: 'subtype' })).toMatch(/answers for the subtype head, the stage1 head was asked for/);
    expect(problem({}, 'site-1', 'stage1', 3)).toMatch(/its gradient is 2 x 4 with 2 intercepts, the head is 3 x 6/);
    expect(problem({ nll: 12 * 691 + 1 })).toMatch(/its NLL .* exceeds what 12 images can give/);
    expect(problem({ intercept: [13, -13] })).toMatch(/intercept gradient 13 \(class 0\) exceeds what 12 images can give \(12\)/);
    expect(problem({ coefficients: [[200, 0, 0, 0], [-200, 0, 0, 0]] })).toMatch(/coefficient gradient 200 \(class 0, column 0\) exceeds what 12 images can give \(168\)/);
    // Every image's gradient sums to 0 over the classes.
    expect(problem({ intercept: [r.intercept[0] + 1, r.intercept[1]] })).toMatch(/intercept gradient sums to .* over the classes, not 0/);
    expect(problem({ coefficients: [r.coefficients[0], r.coefficients[1].map((v, i) => (i === 2 ? v + 0.5 : v))] })).toMatch(/coefficient gradient of column 2 sums to/);
  });

  it('adds the sites\' answers into the pooled gradient', () => {
    const { sites, pooled } = federation(layout, [5, 9, 7], 11);
    const params = { coefficients: [[0.8, -0.2, 0.3, 0.1], [-0.1, 0.6, 0, 0.4]], intercept: [0.2, -0.2] };
    const sum = sumStackingAnswers(sites.map((s) => stackingGradient(s.rows, s.labels, layout, params)));
    const whole = stackingGradient(pooled.rows, pooled.labels, layout, params);
    expect(sum.count).toBe(21);
    expect(sum.nll).toBeCloseTo(whole.nll, 9);
    sum.coefficients.flat().forEach((v, i) => expect(v).toBeCloseTo(whole.coefficients.flat()[i], 9));
    sum.intercept.forEach((v, i) => expect(v).toBeCloseTo(whole.intercept[i], 9));
    expect(() => sumStackingAnswers([])).toThrow(/no answers/);
    expect(stackingGradientNorm(params, { count: 4, coefficients: [[0, 0, 0, 0], [0, 0, 0, 0]], intercept: [4, -4] }, 0)).toBeCloseTo(Math.SQRT2, 12);
  });

  it('with honest sites is fitStackingHead on their pooled rows, step for step, on both heads', async () => {
    const two: OutputLayout = { numClasses: 2, subtypeParents: [0, 0, 1, 1] };
    const { sites, pooled } = federation(two, [20, 35, 15], 5);
    for (const [head, classes] of [['stage1', 2], ['subtype', 4]] as const) {
      const ids = sites.map((_, i) => `site-${i + 1}`);
      const fit = await fitHeadWithSites({
        head,
        members: 2,
        classes,
        sites: ids,
        iterations: 60,
        tolerance: 0,
        ask: async (siteId, params) => honestAnswer(sites[ids.indexOf(siteId)], two, head)(params),
      });
      const local = fitStackingHead(pooled.rows, head === 'stage1' ? pooled.labels : pooled.subtypes!, two, head, { iterations: 60 });
      fit.params!.coefficients.flat().forEach((v, i) => expect(v).toBeCloseTo(local.coefficients.flat()[i], 8));
      fit.params!.intercept.forEach((v, i) => expect(v).toBeCloseTo(local.intercept[i], 8));
      expect(fit.summary).toEqual(expect.objectContaining({ steps: 60, converged: false, images: 70, sites: ids }));
      const nll = (h: LogisticHead) => stackingGradient(pooled.rows, head === 'stage1' ? pooled.labels : pooled.subtypes!, two, h, head).nll / 70;
      expect(fit.summary!.startNll).toBeCloseTo(nll(initialStackingHead(2, classes)), 9);
      expect(fit.summary!.fittedNll).toBeCloseTo(nll(local), 9);
      expect(fit.summary!.fittedNll).toBeLessThan(fit.summary!.startNll);
      expect(fit.refused).toEqual({});
    }
  });

  it('recovers a known linear combination of the members\' log-probabilities from three sites\' data generated by it', async () => {
    const truth: LogisticHead = { coefficients: [[1.2, -0.3, 0.1, 0.4], [-1.2, 0.3, -0.1, -0.4]], intercept: [0.3, -0.3] };
    const { sites } = federation(layout, [600, 900, 500], 7, truth);
    const ids = ['site-1', 'site-2', 'site-3'];
    const fit = await fitHeadWithSites({
      head: 'stage1',
      members: 2,
      classes: 2,
      sites: ids,
      iterations: 200,
      fit: { learningRate: 0.1, l2: 0 },
      ask: async (siteId, params) => honestAnswer(sites[ids.indexOf(siteId)], layout, 'stage1')(params),
    });
    // The fitted combination gives the truth's probabilities (its coefficients are identified only
    // loosely on two classes, where a member's two log-probabilities move together).
    const all = [0, 1].map((m) => Float32Array.from(sites.flatMap((s) => Array.from(s.rows[m]))));
    const fitted = combineMembers(all, layout, { kind: 'stacking', stage1: fit.params! });
    const want = combineMembers(all, layout, { kind: 'stacking', stage1: truth });
    const start = combineMembers(all, layout, { kind: 'stacking', stage1: initialStackingHead(2, 2) });
    const worst = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
    const mean = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => m + Math.abs(v - b[i]), 0) / a.length;
    expect(mean(start, want)).toBeGreaterThan(0.2);
    expect(mean(fitted, want)).toBeLessThan(0.02);
    expect(worst(fitted, want)).toBeLessThan(0.15);
    const labels = Int32Array.from(sites.flatMap((s) => Array.from(s.labels)));
    const nll = (h: LogisticHead) => stackingGradient(all, labels, layout, h).nll;
    expect(nll(fit.params!)).toBeLessThanOrEqual(nll(truth) + 1e-6);
  });

  it('stops early once the summed gradient is flat, and drops a failing site for the rest of the fit with the step and reason', async () => {
    const { sites } = federation(layout, [30, 30, 30], 9);
    const ids = ['site-1', 'site-2', 'site-3'];
    const asked: Record<string, number[]> = { 'site-1': [], 'site-2': [], 'site-3': [] };
    const fit = await fitHeadWithSites({
      head: 'stage1',
      members: 2,
      classes: 2,
      sites: ids,
      iterations: 1000,
      tolerance: 5e-3,
      ask: async (siteId, params, step) => {
        asked[siteId].push(step);
        if (siteId === 'site-2' && step === 4) return { problem: 'site site-2 did not acknowledge: operation has timed out' };
        return honestAnswer(sites[ids.indexOf(siteId)], layout, 'stage1')(params);
      },
    });
    expect(fit.summary!.converged).toBe(true);
    expect(fit.summary!.steps).toBeLessThan(1000);
    expect(asked['site-2']).toEqual([1, 2, 3, 4]);
    expect(asked['site-1']).toHaveLength(fit.summary!.steps + 1); // every step, then the fitted head's measure
    expect(fit.refused).toEqual({ 'site-2': 'stage1 head, step 4: site site-2 did not acknowledge: operation has timed out' });
    expect(fit.summary).toEqual(expect.objectContaining({ images: 60, sites: ['site-1', 'site-3'] }));
  });

  it('without an answer at the first step fits nothing; if every site drops later, keeps the last head they measured', async () => {
    const none = await fitHeadWithSites({ head: 'stage1', members: 2, classes: 2, sites: ['site-1'], iterations: 10, ask: async () => ({ problem: 'busy' }) });
    expect(none).toEqual({ params: null, summary: null, sites: [], refused: { 'site-1': 'stage1 head, step 1: busy' } });
    const heads: LogisticHead[] = [];
    const late = await fitHeadWithSites({
      head: 'stage1',
      members: 2,
      classes: 2,
      sites: ['site-1'],
      iterations: 10,
      ask: async (_siteId, params, step) => {
        heads.push(params);
        return step === 3 ? { problem: 'gone' } : honestAnswer(site, layout, 'stage1')(params);
      },
    });
    expect(late.params).toEqual(heads[1]);
    expect(late.summary).toEqual(expect.objectContaining({ steps: 1, images: 12, sites: ['site-1'] }));
  });
});

describe('the federated stacking fit (issue 16): the exchange', () => {
  const layout: OutputLayout = { numClasses: 2, subtypeParents: [0, 0, 1, 1] };
  const spec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1] };
  const weights = (v: number) => [namedTensor('dense/kernel', [2], [v, -v])];
  const members = [
    { id: 'global', weights: weights(1) },
    { id: 'global-r2', weights: weights(2) },
  ];
  const { sites: data } = federation(layout, [16, 24], 13);

  type Answer = (payload: { head: 'stage1' | 'subtype'; step: number; params: LogisticHead; members: { model: { sha256: string } }[] }, key: ReturnType<typeof generateSigningKeyPair>, siteId: string) => unknown;

  /** An honest site: its gradient, signed. */
  const honest = (site: SiteData): Answer => (payload, key, siteId) => {
    const g = honestAnswer(site, layout, payload.head)(payload.params) as { report: ReturnType<typeof stackingGradient> };
    const report: EnsembleStackingGradientReport = { members: payload.members.map((m) => m.model.sha256), head: payload.head, ...g.report };
    return { ok: true, siteId, report, signature: toBase64(sign(ensembleStackingGradientSignedBytes(RUN, siteId, report), key.secretKey)) };
  };

  function setUp(answers: Record<string, Answer>) {
    const f = fakeSiteExchange<Parameters<Answer>[0]>(Object.keys(answers), (siteId, _event, payload, key) => {
      // What the site validates, and what the coordinator's socket layer validates of the answer.
      expect(ensembleStackingGradientRequestSchema.safeParse(payload).success).toBe(true);
      const ack = ensembleStackingGradientAckSchema.safeParse(answers[siteId](payload, key, siteId));
      return ack.success ? ack.data : refusal('invalid ack', 'invalid-ack');
    });
    return { fitter: new FederatedStackingFit(f.sessions, f.models, f.store, new JsonLogger('test', 'error')), sent: f.sent, offered: f.offered, released: f.released };
  }

  const input = { runId: RUN, spec, stain: null, members, temperatures: new Map([['global', { stage1: 1.5, subtype: 0.8 }]]), timeoutSeconds: 5, iterations: 40 };

  it('fits both heads with the honest sites, drops the others with the reason, and returns a stacking combiner the manifest accepts', async () => {
    const { fitter, sent, offered, released } = setUp({
      'site-1': honest(data[0]),
      'site-2': honest(data[1]),
      // Signed with another key.
      'site-3': (payload, _key, siteId) => honest(data[0])(payload, generateSigningKeyPair(), siteId),
      // Honest for the stage-1 head, then a stage-1 answer to the subtype question (well signed).
      'site-4': (payload, key, siteId) => honest(data[1])(payload.head === 'stage1' ? payload : { ...payload, head: 'stage1', params: initialStackingHead(2, 2) }, key, siteId),
      'site-5': () => refusal('the site has no validation images', 'internal-error'),
    });
    const result = (await fitter.fit(input))!;
    // The questions: every member, the global model with its temperature, both heads, numbered steps.
    expect(sent.every((s) => s.event === EnsembleFitEvents.stacking)).toBe(true);
    expect(sent[0].payload.members).toEqual([
      expect.objectContaining({ id: 'global', temperature: { stage1: 1.5, subtype: 0.8 } }),
      expect.not.objectContaining({ temperature: expect.anything() }),
    ]);
    expect(offered['site-1']).toEqual(members.map((m) => sha256Hex(encodeWeights(m.weights))));
    expect(released()).toBe(5);
    const forSite1 = sent.filter((s) => s.siteId === 'site-1');
    expect(forSite1.filter((s) => s.payload.head === 'stage1').map((s) => s.payload.step)).toEqual(Array.from({ length: 41 }, (_, i) => i + 1));
    expect(forSite1.filter((s) => s.payload.head === 'subtype')).toHaveLength(41);
    // Dropped sites are not asked again.
    expect(sent.filter((s) => s.siteId === 'site-3')).toHaveLength(1);
    expect(sent.filter((s) => s.siteId === 'site-4' && s.payload.head === 'subtype')).toHaveLength(1);
    expect(result.summary.sites).toEqual({
      answered: ['site-1', 'site-2'],
      refused: {
        'site-3': 'stage1 head, step 1: the signature does not verify with the enrolled signing key',
        'site-4': 'subtype head, step 1: it answers for the stage1 head, the subtype head was asked for',
        'site-5': 'stage1 head, step 1: the site has no validation images',
      },
    });
    // site-4 answered every stage-1 step: the stage-1 head is fitted on three sites' images, the subtype head on two.
    expect(result.summary.stacking.stage1).toEqual(expect.objectContaining({ steps: 40, images: 16 + 24 + 24, sites: ['site-1', 'site-2', 'site-4'] }));
    expect(result.summary.stacking.subtype).toEqual(expect.objectContaining({ steps: 40, images: 40, sites: ['site-1', 'site-2'] }));
    expect(result.summary.stacking.stage1!.fittedNll).toBeLessThan(result.summary.stacking.stage1!.startNll);
    expect(result.summary).toEqual(expect.objectContaining({ combiner: 'stacking', fittedMembers: ['global', 'global-r2'] }));
    // The combiner: what the manifest stores and combineMembers applies.
    const combiner = combinerSchema.parse(result.combiner);
    expect(combinerProblem(combiner, 2, layout)).toBeNull();
    expect(combiner).toEqual(expect.objectContaining({ kind: 'stacking', fittedOn: expect.stringMatching(/^federated: 3 sites' validation images, .* global, global-r2 \(stage 1: 40 steps on 64 images; subtypes: 40 steps on 40 images\)/) }));
    const rows = combineMembers(data[0].rows, layout, combiner);
    expect(rows.every((v) => Number.isFinite(v))).toBe(true);
  });

  it('without an answer to the first step keeps the mean; members other sites cannot score are not stacked', async () => {
    const none = setUp({ 'site-1': () => refusal('busy', 'busy') });
    const result = (await none.fitter.fit(input))!;
    expect(result.combiner).toBeUndefined();
    expect(result.summary).toEqual({
      combiner: 'mean-probabilities',
      fittedMembers: ['global', 'global-r2'],
      stacking: { iterations: 40, stage1: null },
      sites: { answered: [], refused: { 'site-1': 'stage1 head, step 1: busy' } },
    });
    const personal = setUp({ 'site-1': honest(data[0]) });
    expect(await personal.fitter.fit({ ...input, members: [...members, { id: 'site-1', weights: weights(3) }] })).toBeUndefined();
    expect(personal.sent).toHaveLength(0);
  });
});
