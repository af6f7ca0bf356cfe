import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromBase64, generateSigningKeyPair, toBase64, verify } from '@histofed/crypto';
import { FINAL_MODELS_ENSEMBLE_FILE, downloadInChunks, finalModelsOfferSchema, finalModelsPackageOf, finalModelsSignedBytes } from '@histofed/protocol';
import { ModelDistribution } from '../federation/model-distribution';
import { FinalModelDelivery, buildFinalModelsPackage, combinerForSite, membersForSite, signFinalModelsPackage } from './final-model-delivery';
import type { CoordinatorKeys } from '../federation/coordinator-keys';
import type { ModelExporter } from '../evaluation/model-exporter.service';
import type { SiteSessionsService } from '../federation/site-sessions.service';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import type { JsonLogger } from '../logging/json-logger';

const RUN = '3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b';
const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/** A run directory as the exporter writes it (file contents are stand-ins: only their bytes matter here). */
function runDir(members: string[], manifestExtras: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'hf-final-'));
  for (const m of members) {
    mkdirSync(join(dir, m));
    writeFileSync(join(dir, m, 'model.json'), `{"model":"${m}"}`);
    writeFileSync(join(dir, m, 'weights.bin'), Buffer.alloc(10_000 + m.length, m.length));
    writeFileSync(join(dir, m, 'histofed-model.json'), `{"name":"${m}"}`);
  }
  writeFileSync(join(dir, members[0], 'weights.bin.tmp-123'), 'half-written leftover');
  writeFileSync(join(dir, FINAL_MODELS_ENSEMBLE_FILE), JSON.stringify({ format: 'histofed-ensemble', formatVersion: 1, combine: 'mean-probabilities', members, ...manifestExtras }));
  return dir;
}

describe('final models: what each site receives', () => {
  it('the global model and its own personalized model, never another site’s; with secure aggregation the global model only', () => {
    const plain = ['global', 'site-1', 'site-2'];
    expect(membersForSite(plain, 'site-1', false)).toEqual(['global', 'site-1']);
    expect(membersForSite(plain, 'site-2', false)).toEqual(['global', 'site-2']);
    expect(membersForSite(plain, 'site-3', false)).toEqual(['global']);
    const fedbn = ['global@site-1', 'global@site-2', 'site-1', 'site-2'];
    expect(membersForSite(fedbn, 'site-1', false)).toEqual(['global@site-1', 'site-1']);
    expect(membersForSite(fedbn, 'site-2', false)).toEqual(['global@site-2', 'site-2']);
    expect(membersForSite(['global'], 'site-1', true)).toEqual(['global']);
    expect(membersForSite(plain, 'site-1', true)).toEqual(['global']);
    // A site id that is a prefix of another's is still only itself.
    expect(membersForSite(['global', 'site-1', 'site-10', 'global@site-10'], 'site-1', false)).toEqual(['global', 'site-1']);
  });

  it('ensemble snapshots of earlier global models travel to every site, also under secure aggregation; the combiner follows the members', () => {
    const run = ['global', 'global-r2', 'global-r1', 'site-1', 'site-2'];
    expect(membersForSite(run, 'site-1', false)).toEqual(['global', 'global-r2', 'global-r1', 'site-1']);
    expect(membersForSite(run, 'site-1', true)).toEqual(['global', 'global-r2', 'global-r1']);
    expect(membersForSite(['global', 'global-r0', 'global-rx'], 'site-1', true)).toEqual(['global']);
    const weighted = { kind: 'weighted-mean', weights: [0.4, 0.2, 0.1, 0.2, 0.1] };
    expect(combinerForSite(weighted, run, run)).toBe(weighted);
    const site = combinerForSite(weighted, run, ['global', 'global-r2', 'global-r1', 'site-1']) as { weights: number[] };
    expect(site.weights.map((w) => Number(w.toFixed(6)))).toEqual([0.444444, 0.222222, 0.111111, 0.222222]);
    expect(site.weights.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(combinerForSite({ kind: 'stacking' }, run, ['global'])).toBe('mean-probabilities');
    expect(combinerForSite('mean-probabilities', run, ['global'])).toBe('mean-probabilities');
  });

  it('packages those directories file by file with sizes and hashes, an ensemble over them, signed by the coordinator', async () => {
    const dir = runDir(['global', 'site-1', 'site-2'], { calibration: { method: 'temperature', stage1: 1.5, fittedOn: 'x' } });
    const keys = generateSigningKeyPair();
    try {
      const built = (await buildFinalModelsPackage(dir, RUN, 'site-1', false, toBase64(keys.publicKey)))!;
      const pkg = built.package;
      expect(pkg.models).toEqual(['global', 'site-1']);
      expect(pkg.files.map((f) => f.path)).toEqual([
        'global/histofed-model.json',
        'global/model.json',
        'global/weights.bin',
        'site-1/histofed-model.json',
        'site-1/model.json',
        'site-1/weights.bin',
        FINAL_MODELS_ENSEMBLE_FILE,
      ]);
      for (const f of pkg.files.filter((f) => f.path !== FINAL_MODELS_ENSEMBLE_FILE)) {
        const bytes = readFileSync(join(dir, f.path));
        expect([f.path, f.bytes, f.sha256]).toEqual([f.path, bytes.length, sha(bytes)]);
      }
      // The site's ensemble: its members only; the run ensemble's calibration was fitted for other members.
      const ensemble = built.files.find((f) => f.path === FINAL_MODELS_ENSEMBLE_FILE)!.source as { data: Uint8Array };
      const manifest = JSON.parse(Buffer.from(ensemble.data).toString('utf8'));
      expect(manifest).toEqual({ format: 'histofed-ensemble', formatVersion: 1, combine: 'mean-probabilities', members: ['global', 'site-1'] });
      expect(pkg.files.find((f) => f.path === FINAL_MODELS_ENSEMBLE_FILE)!.sha256).toBe(sha(ensemble.data));

      const offer = signFinalModelsPackage(pkg, keys.secretKey);
      expect(finalModelsOfferSchema.safeParse(offer).success).toBe(true);
      expect(verify(finalModelsSignedBytes(finalModelsPackageOf(offer)), fromBase64(offer.signature), keys.publicKey)).toBe(true);
      expect(verify(finalModelsSignedBytes({ ...pkg, siteId: 'site-2' }), fromBase64(offer.signature), keys.publicKey)).toBe(false);
      // Offered again: the same package (the export time is the manifest's), so a site that holds it fetches nothing.
      const again = (await buildFinalModelsPackage(dir, RUN, 'site-1', false, toBase64(keys.publicKey)))!;
      expect(Buffer.from(finalModelsSignedBytes(again.package)).equals(Buffer.from(finalModelsSignedBytes(pkg)))).toBe(true);

      const secure = (await buildFinalModelsPackage(dir, RUN, 'site-1', true, toBase64(keys.publicKey)))!;
      expect(secure.package.models).toEqual(['global']);
      expect(secure.package.secureAggregation).toBe(true);
      expect(await buildFinalModelsPackage(dir, RUN, 'site-1', true, toBase64(keys.publicKey)).then((b) => b?.package.files.some((f) => f.path.startsWith('site-')))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the calibration when the site’s ensemble is the run’s; nothing for a run without models', async () => {
    const dir = runDir(['global'], { calibration: { method: 'temperature', stage1: 1.5, fittedOn: 'x' } });
    try {
      const built = (await buildFinalModelsPackage(dir, RUN, 'site-1', true, toBase64(generateSigningKeyPair().publicKey)))!;
      const ensemble = built.files.find((f) => f.path === FINAL_MODELS_ENSEMBLE_FILE)!.source as { data: Uint8Array };
      expect(JSON.parse(Buffer.from(ensemble.data).toString('utf8')).calibration).toEqual({ method: 'temperature', stage1: 1.5, fittedOn: 'x' });
      rmSync(join(dir, FINAL_MODELS_ENSEMBLE_FILE));
      expect(await buildFinalModelsPackage(dir, RUN, 'site-1', true, toBase64(generateSigningKeyPair().publicKey))).toBeNull();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('serves the files in chunks to the site they were offered to, and to no other site', async () => {
    const dir = runDir(['global', 'site-1', 'site-2']);
    try {
      const built = (await buildFinalModelsPackage(dir, RUN, 'site-1', false, toBase64(generateSigningKeyPair().publicKey)))!;
      const models = new ModelDistribution();
      const release = models.offerFilesTo('site-1', built.files.map((f) => f.source), 4096);
      const weights = built.package.files.find((f) => f.path === 'site-1/weights.bin')!;
      const ref = { sha256: weights.sha256, totalBytes: weights.bytes, chunkBytes: 4096, count: Math.ceil(weights.bytes / 4096) };
      const got = await downloadInChunks((r) => models.serveTo('site-1', r), ref);
      expect(Buffer.from(got).equals(readFileSync(join(dir, 'site-1', 'weights.bin')))).toBe(true);
      // The in-memory ensemble manifest too.
      const e = built.package.files.find((f) => f.path === FINAL_MODELS_ENSEMBLE_FILE)!;
      const manifest = await downloadInChunks((r) => models.serveTo('site-1', r), { sha256: e.sha256, totalBytes: e.bytes, chunkBytes: 4096, count: 1 });
      expect(JSON.parse(Buffer.from(manifest).toString('utf8')).members).toEqual(['global', 'site-1']);
      // Another site asking for the same hash is refused: it is not offered to it.
      expect(await models.serveTo('site-2', { sha256: weights.sha256, index: 0 })).toEqual({ ok: false, error: expect.stringMatching(/is not offered/) });
      expect(await models.serveTo('site-1', { sha256: weights.sha256, index: 99 })).toEqual({ ok: false, error: expect.stringMatching(/out of range/) });
      expect(models.filesOfferedTo('site-1')).toBe(new Set(built.files.map((f) => f.source.sha256)).size); // by content
      release();
      release();
      expect(models.filesOfferedTo('site-1')).toBe(0);
      expect(await models.serveTo('site-1', { sha256: weights.sha256, index: 0 })).toEqual({ ok: false, error: expect.stringMatching(/is not offered/) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a delivery still waiting for an answer on an old connection does not hold back the one on a new connection', async () => {
    // A site stopped right after installing may never send its acknowledgement: the coordinator waits
    // for it (up to 30 min). When the site connects again, a new delivery must go out regardless.
    const dir = runDir(['global', 'site-1']);
    const keys = generateSigningKeyPair();
    const sent: string[] = [];
    let answer: ((ack: { ok: true; installed: boolean; alreadyInstalled: boolean }) => void) | undefined;
    let offered: () => void = () => undefined;
    const nextOffer = () => new Promise<void>((ok) => (offered = ok));
    const sessions = {
      onConnect: () => undefined,
      isConnected: () => true,
      send: (siteId: string) => {
        sent.push(siteId);
        offered();
        return new Promise((ok) => (answer = ok));
      },
    };
    const delivery = new FinalModelDelivery(
      {} as CoordinatorStore,
      { event: () => undefined } as unknown as JsonLogger,
      sessions as unknown as SiteSessionsService,
      new ModelDistribution(),
      { runDir: () => dir } as unknown as ModelExporter,
      { sign: keys } as unknown as CoordinatorKeys,
    );
    try {
      let first = nextOffer();
      void delivery.deliver(RUN, 'site-1', false, 'run finished');
      await first;
      expect(sent).toEqual(['site-1']);
      // The same connection: no second offer while the first waits.
      await delivery.deliver(RUN, 'site-1', false, 'run finished');
      expect(sent).toEqual(['site-1']);
      // A new connection: offered again.
      first = nextOffer();
      const second = delivery.deliver(RUN, 'site-1', false, 'site connected', true);
      await first;
      expect(sent).toEqual(['site-1', 'site-1']);
      answer?.({ ok: true, installed: true, alreadyInstalled: false });
      await second;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
