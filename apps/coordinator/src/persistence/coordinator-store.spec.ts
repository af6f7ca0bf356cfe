import { chmodSync, mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource } from 'typeorm';
import { encodeWeights, namedTensor, sha256Hex } from '@histofed/fl-core';
import { openDatabase } from './data-source';
import { RunConfig } from './records';
import { TypeOrmCoordinatorStore } from './typeorm-coordinator-store';
import { entriesOpenToOthers as openToOthers } from './private-files';

/**
 * The persistence suite runs on embedded PGlite always, and on a PostgreSQL server too when
 * DATABASE_URL is set (as .ci/run does). Each server run uses a fresh schema.
 */
const backends: [string, () => Promise<DataSource>][] = [
  ['pglite', () => openDatabase({ dataDir: mkdtempSync(join(tmpdir(), 'hf-store-')) })],
];
if (process.env.DATABASE_URL) {
  backends.push([
    'postgresql',
    async () => {
      const schema = `test_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
      const admin = new DataSource({ type: 'postgres', url: process.env.DATABASE_URL });
      await admin.initialize();
      await admin.query(`CREATE SCHEMA ${schema}`);
      await admin.destroy();
      const url = new URL(process.env.DATABASE_URL as string);
      url.searchParams.set('options', `-c search_path=${schema}`);
      return openDatabase({ dataDir: '', databaseUrl: url.toString() });
    },
  ]);
}

const config: RunConfig = {
  name: 'test',
  model: { kind: 'small-cnn', imageSize: 32, numClasses: 2 },
  strategy: 'fedavg',
  rounds: 2,
  localEpochs: 1,
  batchSize: 8,
  learningRate: 0.001,
  proximalMu: 0.01,
  minSites: 1,
  maxSites: 10,
  roundTimeoutSeconds: 60,
  waitForSitesSeconds: 60,
  maxUpdateNorm: 0,
  personalizeEpochs: 1,
  seed: 1,
};

describe.each(backends)('coordinator store on %s', (_name, open) => {
  let ds: DataSource;
  let store: TypeOrmCoordinatorStore;
  // A new embedded database is created by a child process (initdb): seconds on a busy machine.
  beforeAll(async () => {
    ds = await open();
    store = new TypeOrmCoordinatorStore(ds);
  }, 120_000);
  afterAll(async () => store.close());

  it('applies the migrations (no synchronize)', async () => {
    const applied = await ds.query('SELECT name FROM migrations');
    expect(applied.map((r: { name: string }) => r.name)).toContain('InitialSchema1764200000000');
    expect(applied.map((r: { name: string }) => r.name)).toContain('ModelBlobStorage1764500000000');
  });

  it('stores weights content-addressed, once, byte-exact', async () => {
    const bytes = encodeWeights([namedTensor('w', [3], [1, -2, 3.5])]);
    const h1 = await store.putModel(bytes, 3);
    const h2 = await store.putModel(bytes, 3);
    expect(h1).toBe(sha256Hex(bytes));
    expect(h2).toBe(h1);
    const [{ n }] = await ds.query('SELECT count(*)::int AS n FROM models WHERE hash = $1', [h1]);
    expect(n).toBe(1);
    const back = await store.getModel(h1);
    expect(Buffer.from(back!.bytes).equals(Buffer.from(bytes))).toBe(true);
    expect(await store.getModel('0'.repeat(64))).toBeNull();
  });

  it('round-trips a 20 MB blob byte for byte, from an unaligned view, without storing it twice or compressing it', async () => {
    // Every byte value, in an order that is not a simple pattern, behind a 3-byte offset.
    const backing = new Uint8Array(20_000_003 + 3);
    for (let i = 0; i < backing.length; i++) backing[i] = (i * 2654435761) >>> 24;
    const bytes = backing.subarray(3);
    const hash = await store.putModel(bytes, 5_000_000);
    expect(hash).toBe(sha256Hex(bytes));
    expect(await store.putModel(new Uint8Array(bytes), 5_000_000)).toBe(hash);
    const [row] = await ds.query('SELECT count(*)::int AS n, max(byte_length) AS len, max(parameter_count) AS p FROM models WHERE hash = $1', [hash]);
    expect(row).toEqual({ n: 1, len: bytes.length, p: 5_000_000 });
    // Model blobs are stored out of line without compression attempts (migration 1764500000000).
    const [{ storage }] = await ds.query(
      "SELECT attstorage AS storage FROM pg_attribute WHERE attrelid = 'models'::regclass AND attname = 'data'",
    );
    expect(storage).toBe('e');
    const back = await store.getModel(hash);
    expect(back!.parameterCount).toBe(5_000_000);
    expect(back!.bytes.byteOffset).toBe(0);
    expect(back!.bytes.byteLength).toBe(back!.bytes.buffer.byteLength);
    expect(Buffer.compare(Buffer.from(back!.bytes), Buffer.from(bytes))).toBe(0);
    // A blob owning its whole buffer (as encodeWeights returns) takes the other serializer path.
    const whole = new Uint8Array(bytes.length);
    whole.set(bytes);
    whole[12345] ^= 0xff;
    const wholeHash = await store.putModel(whole, 5_000_000);
    expect(Buffer.compare(Buffer.from((await store.getModel(wholeHash))!.bytes), Buffer.from(whole))).toBe(0);
  });

  it('keeps a site status across enrollments and hellos, forgets a deleted site, records runs, rounds and contributions', async () => {
    const keys = { siteId: 'hospital-a', boxPublicKey: 'box', signPublicKey: 'sign' };
    expect(await store.recordHello('hospital-a', { backend: 'wasm', software: 's', trainSamples: 5, validationSamples: 1, labelledImages: 0 })).toBeNull();
    expect((await store.enrollSite(keys, 'pending')).status).toBe('pending');
    await store.setSiteStatus('hospital-a', 'approved');
    expect((await store.enrollSite({ ...keys, signPublicKey: 'sign2' }, 'pending')).status).toBe('approved');
    const hello = await store.recordHello('hospital-a', { backend: 'wasm', software: 's', trainSamples: 7, validationSamples: 1, labelledImages: 4 });
    expect(hello).toMatchObject({ trainSamples: 7, labelledImages: 4, signPublicKey: 'sign2', status: 'approved' });
    expect(await store.deleteSite('hospital-a')).toBe(true);
    expect(await store.getSite('hospital-a')).toBeNull();
    expect(await store.deleteSite('hospital-a')).toBe(false);

    const run = await store.createRun(config);
    expect(run.status).toBe('created');
    const model = await store.putModel(encodeWeights([namedTensor('w', [1], [1])]), 1);
    await store.updateRun(run.id, { status: 'running', currentModelHash: model });
    expect((await store.getRun(run.id))!.strategyStateHash).toBeNull();
    // A server optimizer's state is stored like a model and referenced by the run.
    const state = await store.putModel(encodeWeights([namedTensor('m/w', [1], [0.5])]), 1);
    expect((await store.updateRun(run.id, { strategyStateHash: state })).strategyStateHash).toBe(state);
    expect((await store.getRun(run.id))!.currentModelHash).toBe(model);
    await expect(store.updateRun(run.id, { strategyStateHash: 'f'.repeat(64) })).rejects.toThrow();
    expect((await store.getRun(run.id))!.strategyStateHash).toBe(state);
    // Feature alignment's reference: stored with the run's progress, read on its own, not in RunRecord.
    expect(await store.getAlignmentReference(run.id)).toBeNull();
    const reference = { count: 12, dim: 2, mean: [0.25, -1.5], secondMoment: [1, 0.125, 0.125, 3.0000001] };
    const progressed = await store.updateRun(run.id, { completedRounds: 1, alignmentReference: reference });
    expect(progressed).not.toHaveProperty('alignmentReference');
    expect(await store.getAlignmentReference(run.id)).toEqual(reference);
    await store.updateRun(run.id, { statusReason: null });
    expect(await store.getAlignmentReference(run.id)).toEqual(reference);
    expect(await store.getAlignmentReference('00000000-0000-4000-8000-000000000000')).toBeNull();
    await store.updateRun(run.id, { completedRounds: 0 });
    const started = new Date();
    await store.saveRound({
      runId: run.id,
      round: 1,
      status: 'training',
      participants: ['hospital-a'],
      baseModelHash: model,
      modelHash: null,
      siteMetrics: null,
      centralMetrics: null,
      reason: null,
      startedAt: started,
      completedAt: null,
    });
    await store.saveRound({
      ...(await store.listRounds(run.id))[0],
      status: 'completed',
      modelHash: model,
      centralMetrics: { accuracy: 0.5 },
      completedAt: new Date(),
    });
    const rounds = await store.listRounds(run.id);
    expect(rounds).toHaveLength(1);
    expect(rounds[0].centralMetrics).toEqual({ accuracy: 0.5 });
    await store.addContribution({
      runId: run.id,
      round: 1,
      kind: 'round',
      siteId: 'hospital-a',
      status: 'rejected',
      reason: 'wrong round',
      numSamples: null,
      metrics: null,
      modelHash: null,
      bytes: 10,
      nonce: 'n-1',
    });
    expect(await store.hasContributionNonce('hospital-a', 'n-1')).toBe(true);
    expect(await store.hasContributionNonce('hospital-a', 'n-2')).toBe(false);
    expect(await store.hasContributionNonce('hospital-b', 'n-1')).toBe(false);
    const contributions = await store.listContributions(run.id, 1);
    expect(contributions.map((c) => [c.status, c.reason])).toEqual([['rejected', 'wrong round']]);
    expect((await store.listRunsWithStatus('running')).map((r) => r.id)).toContain(run.id);
  });

  it('counts and expires pending sites, keeps approved ones, and stores single-use enrollment tokens', async () => {
    const key = (siteId: string) => ({ siteId, boxPublicKey: 'box', signPublicKey: 'sign' });
    await store.enrollSite(key('pending-old'), 'pending');
    await store.enrollSite(key('approved-old'), 'approved');
    await new Promise((r) => setTimeout(r, 20));
    const cut = new Date();
    await new Promise((r) => setTimeout(r, 20));
    await store.enrollSite(key('pending-new'), 'pending');
    expect(await store.countSites('pending')).toBe(2);
    expect(await store.deletePendingSitesEnrolledBefore(cut)).toEqual(['pending-old']);
    expect(await store.getSite('pending-old')).toBeNull();
    expect((await store.getSite('approved-old'))!.status).toBe('approved');
    expect(await store.countSites('pending')).toBe(1);

    const token = { siteId: 'hospital-t', tokenSha256: 'a'.repeat(64), createdAt: new Date(), expiresAt: new Date(Date.now() + 3600_000) };
    await store.putEnrollmentToken(token);
    expect(await store.getEnrollmentToken('hospital-t')).toEqual(token);
    await store.putEnrollmentToken({ ...token, tokenSha256: 'b'.repeat(64) }); // reissued: replaces
    expect((await store.getEnrollmentToken('hospital-t'))!.tokenSha256).toBe('b'.repeat(64));
    expect(await store.deleteEnrollmentToken('hospital-t')).toBe(true);
    expect(await store.deleteEnrollmentToken('hospital-t')).toBe(false);
    expect(await store.getEnrollmentToken('hospital-t')).toBeNull();
    for (const id of ['approved-old', 'pending-new']) await store.deleteSite(id);
  });

  it('refuses a run pointing at a model that does not exist (foreign key)', async () => {
    const run = await store.createRun(config);
    await expect(store.updateRun(run.id, { currentModelHash: 'e'.repeat(64) })).rejects.toThrow();
    expect((await store.getRun(run.id))!.currentModelHash).toBeNull();
  });
});


describe('embedded database files', () => {
  it('are private to the user: the data directory and pgdata are 0700 and no file is group/world readable (PGlite writes 0666)', async () => {
    const previous = process.umask(0o022);
    const dataDir = join(mkdtempSync(join(tmpdir(), 'hf-modes-')), 'coordinator');
    try {
      let reported = 0;
      const ds = await openDatabase({ dataDir, onPermissionsFixed: (f) => (reported = f.files) });
      const store = new TypeOrmCoordinatorStore(ds);
      await store.createRun(config); // writes after the start-up fix stay private too
      await store.close();
      expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      expect(statSync(join(dataDir, 'pgdata')).mode & 0o777).toBe(0o700);
      expect(readdirSync(join(dataDir, 'pgdata')).length).toBeGreaterThan(5);
      expect(openToOthers(dataDir)).toEqual([]);
      expect(reported).toBeGreaterThan(100); // PGlite's initdb files, fixed and reported

      // An existing data directory left open to others (e.g. by an older version) is fixed on open.
      chmodSync(dataDir, 0o755);
      chmodSync(join(dataDir, 'pgdata'), 0o755);
      chmodSync(join(dataDir, 'pgdata', 'PG_VERSION'), 0o666);
      const again = await openDatabase({ dataDir });
      await again.destroy();
      expect(openToOthers(dataDir)).toEqual([]);
    } finally {
      process.umask(previous);
    }
  }, 120_000);
});
