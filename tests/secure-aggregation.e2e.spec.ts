/**
 * Secure aggregation (SecAgg+) end to end: a real coordinator process (embedded PostgreSQL) and
 * five participants in this process that speak the real protocol through the site client's own
 * secure-aggregation code (libs/secagg SiteSecureAggregation), each sending a known update.
 * The coordinator's new global model must equal plain FedAvg of the surviving sites' updates
 * within the quantization error — with all sites, with two sites dropped after the key exchange,
 * and after a round that failed cleanly because too few sites revealed their shares. The
 * coordinator must never store a single site's update. The run ends with a snapshot ensemble and a
 * boosted member (issue 16) trained in one more secure round. The dashboard (issue 17), open in
 * headless Chromium during the run, shows each secure-aggregation stage as it is pushed.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IdentityKeys, generateBoxKeyPair, generateSigningKeyPair } from '@histofed/crypto';
import { WeightSet, decodeWeights, encodeWeights, namedTensor, sha256Hex } from '@histofed/fl-core';
import { generateSyntheticBreakHis } from '@histofed/data';
import { ChunkEvents, SecAggEvents, TrainTask, downloadInChunks } from '@histofed/protocol';
import { SiteSecureAggregation, quantizationErrorBound } from '@histofed/secagg';
import { Federation, startFederation } from '@histofed/harness';
import { Predictor } from '@histofed/inference';
import { getWeights, loadModel, readEnsembleManifest, selectBackend } from '@histofed/ml';
import { RogueSite } from '@histofed/harness';
import type { Browser, Page } from 'playwright-core';
import { hasChromium, inCi, itWithChromium, launchChromium } from './support/browser';

interface Round {
  round: number;
  status: string;
  reason: string | null;
  baseModelHash: string;
  modelHash: string | null;
  participants: string[];
}
interface Contribution {
  siteId: string;
  status: string;
  modelHash: string | null;
}

const SITES = ['h1', 'h2', 'h3', 'h4', 'h5'];
const SAMPLES: Record<string, number> = { h1: 10, h2: 20, h3: 30, h4: 40, h5: 50 };
const CLIP = 1;

/** Site `id`'s update in `round`: small, distinct, deterministic values (|delta| < 0.05 < CLIP). */
function deltaOf(id: string, round: number, global: WeightSet): WeightSet {
  let state = (SITES.indexOf(id) + 1) * 7919 + round * 104729;
  const next = () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648 - 0.5;
  };
  return global.map((t) => namedTensor(t.name, t.shape, Float32Array.from(t.values, () => next() / 10)));
}
const plus = (a: WeightSet, b: WeightSet) => a.map((t, i) => namedTensor(t.name, t.shape, Float32Array.from(t.values, (v, j) => v + b[i].values[j])));

/** FedAvg of the given sites' updates, in float64, independently of libs/aggregation and libs/secagg. */
function expectedGlobal(global: WeightSet, sites: string[], round: number): Float64Array[] {
  const total = sites.reduce((s, id) => s + SAMPLES[id], 0);
  return global.map((t, i) => {
    const out = Float64Array.from(t.values);
    for (const id of sites) {
      const d = deltaOf(id, round, global)[i].values;
      for (let j = 0; j < out.length; j++) out[j] += (SAMPLES[id] / total) * d[j];
    }
    return out;
  });
}

describe('secure aggregation across a real coordinator', () => {
  let work: string;
  let fed: Federation;
  const sites: RogueSite[] = [];
  const globals = new Map<number, WeightSet>();
  /** How each site behaves, by round and attempt. */
  const dropInRound2 = new Set(['h4', 'h5']);
  const muteAtUnmask = new Set(['h2', 'h3']);
  let round3Unmasks = 0;
  let runId: string;
  let rounds: Round[];
  /** The boosted member's round (issue 16): each site's task and the ensemble member it fetched. */
  const boostTasks: { siteId: string; task: TrainTask; member: WeightSet }[] = [];
  /** The dashboard, open during the run (where Chromium is, and always in CI: there a missing browser fails its test). */
  let browser: Browser | undefined;
  let page: Page | undefined;
  let browserError: unknown;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-secagg-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 6, patientsPerSubtype: 1, imagesPerPatient: 2 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 0, seed: 6 });
    for (const id of SITES) {
      const keys: IdentityKeys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
      const secure = new SiteSecureAggregation(id, keys.sign.secretKey);
      const site = new RogueSite(
        fed.url,
        id,
        async (r: RogueSite, task: TrainTask) => {
          const round = task.config.round;
          const global = r.globals.get(task.modelHash)!;
          if (task.kind === 'boost') {
            const ref = task.boosting!.members[0];
            const bytes = await downloadInChunks((request) => r.socket.timeout(30_000).emitWithAck(ChunkEvents.fetchChunk, request), ref);
            boostTasks.push({ siteId: id, task, member: decodeWeights(bytes, 'boosting member') });
          }
          globals.set(round, global);
          if (round === 2 && dropInRound2.has(id)) {
            r.close(); // drops out after the key exchange, before sending its update
            return;
          }
          const local = plus(global, deltaOf(id, round, global));
          const masked = secure.mask(task.config.runId, round, task.secagg!, global, local, SAMPLES[id]);
          await r.deliver(`round ${round}`, r.update(task, { masked, numSamples: SAMPLES[id] }));
        },
        keys,
      );
      site.socket.on(SecAggEvents.advertise, (raw: unknown, ack: (a: unknown) => void) => ack(secure.advertise(raw)));
      site.socket.on(SecAggEvents.shareKeys, (raw: unknown, ack: (a: unknown) => void) => ack(secure.shareKeys(raw)));
      site.socket.on(SecAggEvents.unmask, (raw: { round: number }, ack: (a: unknown) => void) => {
        // In round 3's first attempt two of the three survivors stay silent: below the threshold.
        if (raw.round === 3 && muteAtUnmask.has(id) && round3Unmasks++ < 2) return;
        ack(secure.unmask(raw));
      });
      sites.push(site);
      expect((await site.enroll()).status).toBe('approved');
      expect((await site.hello(SAMPLES[id])).ok).toBe(true);
    }
    if (hasChromium || inCi) {
      try {
        browser = await launchChromium();
        page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
        // Everything the live-round box ever showed (each render's nodes keep their text after the next replaces them).
        await page.addInitScript(`
          window.__liveRound = [];
          new MutationObserver((records) => records.forEach((r) => {
            if (r.target.id === 'live-round') r.addedNodes.forEach((n) => window.__liveRound.push(n.textContent));
          })).observe(document, { subtree: true, childList: true });
        `);
        await page.goto(`${fed.url}/#token=${fed.token}`);
        await page.waitForSelector('#live.on');
      } catch (e) {
        browserError = e;
      }
    }

    const run = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 3,
      minSites: 3,
      maxSites: 5,
      personalizeEpochs: 0,
      roundTimeoutSeconds: 60,
      // A pruned SE-CNN (issue 18): the shapes channel pruning at half the multiply-adds records in the
      // spec (12/20/44 filters, the SE bottlenecks kept), masked and aggregated like any layout.
      model: { kind: 'se-cnn', imageSize: 24, numClasses: 2, options: { filters1: 12, filters2: 20, filters3: 44, seUnits1: 2, seUnits2: 4, seUnits3: 8 } },
      secureAggregation: { clipRange: CLIP, stageTimeoutSeconds: 5 },
      // Issue 16: snapshot bagging — the ensemble also holds rounds 1 and 2's global models — and
      // one boosted member, trained in one more (secure) round from the final global model.
      ensemble: { snapshots: 2, boosting: { members: 1, rounds: 1 } },
    });
    runId = run.id;
    await fed.admin.request('POST', `/api/runs/${runId}/start`);
    const final = await fed.admin.waitForRun<{ status: string; statusReason: string | null }>(runId, 300_000);
    expect(final).toEqual(expect.objectContaining({ status: 'completed', statusReason: null }));
    rounds = await fed.admin.request<Round[]>('GET', `/api/runs/${runId}/rounds`);
  });

  afterAll(async () => {
    await browser?.close();
    for (const s of sites) s.close();
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const model = async (hash: string) => decodeWeights(await fed.admin.bytes(`/api/models/${hash}`), hash);
  const completed = (round: number) => rounds.find((r) => r.round === round && r.status === 'completed')!;

  /** `scaleSites`: the sites that completed the key exchange (their samples are the weight scale). */
  async function expectFedAvg(round: number, survivors: string[], scaleSites: string[]) {
    const r = completed(round);
    expect([...r.participants].sort()).toEqual(survivors);
    const global = globals.get(round)!;
    expect(sha256Hex(encodeWeights(global))).toBe(r.baseModelHash);
    const expected = expectedGlobal(global, survivors, round);
    const actual = await model(r.modelHash!);
    const samples = (ids: string[]) => ids.reduce((s, id) => s + SAMPLES[id], 0);
    const weightSum = samples(survivors) / samples(scaleSites);
    // Quantization error of the sum, divided by the survivors' weight; plus float32 rounding.
    const tolerance = quantizationErrorBound(survivors.length, CLIP) / weightSum + 1e-6;
    let worst = 0;
    actual.forEach((t, i) => t.values.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[i][j])))));
    expect(worst).toBeLessThanOrEqual(tolerance);
    // ... and the sites' updates really moved the model (the check is not trivially true).
    let moved = 0;
    actual.forEach((t, i) => t.values.forEach((v, j) => (moved = Math.max(moved, Math.abs(v - global[i].values[j])))));
    expect(moved).toBeGreaterThan(100 * tolerance);
  }

  it('with every site, the unmasked sum is FedAvg of their updates within the quantization error', async () => {
    await expectFedAvg(1, SITES, SITES);
    // The pruned shapes are the model's: block 3 reads 20 channels and writes 44, its SE bottleneck 8.
    const shapes = new Map((await model(completed(1).modelHash!)).map((t) => [t.name, t.shape.join('x')]));
    expect([shapes.get('conv1/kernel'), shapes.get('conv3/kernel'), shapes.get('se3_reduce/kernel')]).toEqual(['3x3x3x12', '3x3x20x44', '44x8']);
  });

  it('with two sites dropped after sharing their keys, it is FedAvg of the survivors', async () => {
    await expectFedAvg(2, ['h1', 'h2', 'h3'], SITES);
  });

  it('below the threshold the round fails cleanly with the reason, and the retry succeeds', async () => {
    // The round record keeps the last attempt; the failed one is in the log with its reason.
    const failed = fed.coordinator.lines.filter((l) => l.msg === 'round failed' && l.round === 3);
    expect(failed).toHaveLength(1);
    expect(String(failed[0].reason)).toMatch(/secure aggregation could not unmask the sum: .*threshold/);
    await expectFedAvg(3, ['h1', 'h2', 'h3'], ['h1', 'h2', 'h3']);
  });

  it('trains a boosted member (issue 16) in a secure round after the last: FedAvg of the survivors from the final global model, which the sites fetched to weigh their images', async () => {
    const finalGlobal = completed(3).modelHash!;
    expect(boostTasks.map((b) => b.siteId).sort()).toEqual(['h1', 'h2', 'h3']);
    for (const b of boostTasks) {
      expect(b.task).toMatchObject({ kind: 'boost', modelHash: finalGlobal, config: { round: 4 }, boosting: { strength: 2, maxRatio: 20 } });
      expect(b.task.secagg).toBeDefined();
      expect(b.task.boosting!.members.map((m) => m.sha256)).toEqual([finalGlobal]);
      expect(sha256Hex(encodeWeights(b.member))).toBe(finalGlobal);
    }
    const run = await fed.admin.request<{ final: { modelsDir?: string } }>('GET', `/api/runs/${runId}`);
    await selectBackend('cpu');
    const loaded = await loadModel(join(run.final.modelsDir!, 'global-b1'));
    try {
      const actual = getWeights(loaded.model);
      const global = globals.get(4)!;
      const expected = expectedGlobal(global, ['h1', 'h2', 'h3'], 4);
      const tolerance = quantizationErrorBound(3, CLIP) + 1e-6;
      let worst = 0;
      actual.forEach((t, i) => t.values.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[i][j])))));
      expect(worst).toBeLessThanOrEqual(tolerance);
    } finally {
      loaded.model.dispose();
    }
  });

  it('ends with a snapshot ensemble (issue 16): the final global model, rounds 2 and 1\'s and the boosted member, which loads and predicts', async () => {
    const run = await fed.admin.request<{ final: { ensembleMembers: string[]; modelsDir?: string } }>('GET', `/api/runs/${runId}`);
    const members = ['global', 'global-r2', 'global-r1', 'global-b1'];
    expect(run.final.ensembleMembers).toEqual(members);
    const dir = run.final.modelsDir!;
    expect((await readEnsembleManifest(dir)).members).toEqual(members);
    await selectBackend('cpu');
    for (const r of [1, 2]) {
      // Each snapshot is the round's global model the coordinator stored (and sent to the sites).
      const loaded = await loadModel(join(dir, `global-r${r}`));
      expect(loaded.manifest.provenance).toEqual(expect.objectContaining({ kind: 'global', round: r }));
      expect(loaded.manifest.spec.options).toEqual(expect.objectContaining({ filters1: 12, filters2: 20, filters3: 44 }));
      const stored = await model(completed(r).modelHash!);
      getWeights(loaded.model).forEach((t, i) => expect(Array.from(t.values)).toEqual(Array.from(stored[i].values)));
      loaded.model.dispose();
    }
    const dataDir = join(work, 'data');
    const find = (d: string): string => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isFile() && /\.png$/i.test(e.name)) return join(d, e.name);
        if (e.isDirectory()) {
          const f = find(join(d, e.name));
          if (f) return f;
        }
      }
      return '';
    };
    const predictor = await Predictor.load(dir);
    try {
      expect(predictor.description).toEqual(expect.objectContaining({ kind: 'ensemble', members, combine: 'mean-probabilities' }));
      const p = await predictor.predictFile(find(dataDir));
      expect(p.stage1.probability).toBeGreaterThanOrEqual(0.5);
      expect(p.stage1.probabilities['benign'] + p.stage1.probabilities['malignant']).toBeCloseTo(1, 5);
      expect(p.uncertainty.memberVariance).toBeDefined();
    } finally {
      predictor.dispose();
    }
  });

  itWithChromium('the dashboard showed each secure-aggregation stage of the run as it was pushed (GET /api/events)', async () => {
    if (browserError !== undefined || !page) throw browserError ?? new Error('no browser');
    const shown = ((await page.evaluate('window.__liveRound')) as string[]).filter((t) => /secure aggregation/.test(t));
    const stages = new Set(shown.map((t) => /^Round [1-3] of 3 in progress · secure aggregation: ([a-z-]+) \(\d+ sites\)$/.exec(t)?.[1]));
    expect([...stages].sort()).toEqual(['advertise', 'masked-updates', 'share-keys', 'unmask']);
    // Round 3's first attempt waited at the unmasking for the two silent sites: the three it asked.
    expect(shown).toContain('Round 3 of 3 in progress · secure aggregation: unmask (3 sites)');
  });

  it('the coordinator never stores a single site\'s update', async () => {
    const contributions: Contribution[] = [];
    for (const round of [1, 2, 3, 4]) contributions.push(...(await fed.admin.request<Contribution[]>('GET', `/api/runs/${runId}/rounds/${round}/contributions`)));
    const accepted = contributions.filter((c) => c.status === 'accepted');
    expect(accepted.length).toBeGreaterThanOrEqual(5 + 3 + 3 + 3);
    expect(accepted.every((c) => c.modelHash === null)).toBe(true);
    for (const [round, global] of globals) {
      for (const id of SITES) {
        const local = plus(global, deltaOf(id, round, global));
        const res = await fetch(`${fed.url}/api/models/${sha256Hex(encodeWeights(local))}`, { headers: { authorization: `Bearer ${fed.token}` } });
        expect(res.status).toBe(404);
      }
    }
    const perSite = fed.coordinator.lines.filter((l) => l.msg === 'contribution accepted');
    expect(perSite).toHaveLength(0);
    expect(fed.coordinator.lines.filter((l) => l.msg === 'masked contribution added to the secure sum').length).toBe(accepted.length);
  });
});
