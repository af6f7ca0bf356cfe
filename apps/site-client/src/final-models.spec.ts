import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSigningKeyPair, sign, toBase64 } from '@histofed/crypto';
import { FINAL_MODELS_DELIVERY_FILE, FINAL_MODELS_ENSEMBLE_FILE, FinalModelsPackage, finalModelsSignedBytes } from '@histofed/protocol';
import { CoordinatorKeyMismatch, PINNED_KEY_FILE, pinCoordinatorKey, readPinnedCoordinatorKey } from './coordinator-key-pin';
import { FinalModelsRefused, installFinalModels, listInstalledModels } from './final-models';

const RUN = '3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b';
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const coordinator = generateSigningKeyPair();

/** What the coordinator would send site-1: files (path -> bytes), signed with `key`. */
function offerOf(files: Record<string, Uint8Array>, opts: { siteId?: string; key?: typeof coordinator; models?: string[] } = {}) {
  const key = opts.key ?? coordinator;
  const pkg: FinalModelsPackage = {
    runId: RUN,
    siteId: opts.siteId ?? 'site-1',
    createdAt: '2025-01-01T00:00:00.000Z',
    secureAggregation: false,
    models: opts.models ?? ['global', 'site-1'],
    files: Object.entries(files).map(([path, bytes]) => ({ path, bytes: bytes.length, sha256: sha(bytes) })),
    coordinatorSignPublicKey: toBase64(key.publicKey),
  };
  return { ...pkg, signature: toBase64(sign(finalModelsSignedBytes(pkg), key.secretKey)), chunkBytes: 4096 };
}

const text = (s: string) => new TextEncoder().encode(s);
const FILES: Record<string, Uint8Array> = {
  'global/model.json': text('{"global":1}'),
  'global/weights.bin': new Uint8Array(5000).fill(1),
  'site-1/model.json': text('{"site":1}'),
  'site-1/weights.bin': new Uint8Array(5000).fill(2),
  [FINAL_MODELS_ENSEMBLE_FILE]: text('{"format":"histofed-ensemble","formatVersion":1,"combine":"mean-probabilities","members":["global","site-1"]}'),
};

describe('final models at the site', () => {
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hf-site-models-'));
  });
  afterEach(() => rmSync(state, { recursive: true, force: true }));

  const pin = async (key = coordinator) => (await pinCoordinatorKey(state, toBase64(key.publicKey), 'http://coordinator', 'enroll')).pin;
  const serve = (files: Record<string, Uint8Array>) => {
    const fetched: string[] = [];
    const fetch = async (f: { path: string }) => {
      fetched.push(f.path);
      return files[f.path];
    };
    return { fetch, fetched };
  };
  /** Nothing but the pin file and (when installed) the run's directory: no temporary leftovers. */
  const leftovers = () => (existsSync(join(state, 'models')) ? readdirSync(join(state, 'models')).filter((n) => n !== RUN) : []);

  it('pins the coordinator key on first use, accepts it again, refuses another one', async () => {
    expect(await readPinnedCoordinatorKey(state)).toBeNull();
    const first = await pinCoordinatorKey(state, toBase64(coordinator.publicKey), 'http://c', 'hello');
    expect(first.status).toBe('pinned');
    expect(statSync(join(state, PINNED_KEY_FILE)).mode & 0o777).toBe(0o600);
    expect((await pinCoordinatorKey(state, toBase64(coordinator.publicKey), 'http://c', 'enroll')).status).toBe('matches');
    const other = toBase64(generateSigningKeyPair().publicKey);
    await expect(pinCoordinatorKey(state, other, 'http://c', 'enroll')).rejects.toThrow(CoordinatorKeyMismatch);
    await expect(pinCoordinatorKey(state, other, 'http://c', 'enroll')).rejects.toThrow(/signing key changed.*delete .*coordinator-key\.json/);
    // The pin is never replaced silently.
    expect((await readPinnedCoordinatorKey(state))?.signPublicKey).toBe(toBase64(coordinator.publicKey));
    expect((await readPinnedCoordinatorKey(state))?.pinnedOn).toBe('hello');
  });

  it('installs a signed package: every file with its signed hash, the signed package beside them', async () => {
    const pinned = await pin();
    const { fetch, fetched } = serve(FILES);
    const result = await installFinalModels(state, 'site-1', offerOf(FILES), pinned, fetch);
    expect(result).toEqual({ runId: RUN, dir: join(state, 'models', RUN), installed: ['global', 'site-1'], alreadyInstalled: false });
    for (const [path, bytes] of Object.entries(FILES)) expect(Buffer.from(readFileSync(join(result.dir, path))).equals(Buffer.from(bytes))).toBe(true);
    expect(fetched).toEqual(Object.keys(FILES));
    const record = JSON.parse(readFileSync(join(result.dir, FINAL_MODELS_DELIVERY_FILE), 'utf8'));
    expect(record).toEqual(expect.objectContaining({ runId: RUN, siteId: 'site-1', models: ['global', 'site-1'], signature: expect.any(String), installedAt: expect.any(String) }));
    expect(statSync(join(result.dir, 'site-1', 'weights.bin')).mode & 0o077).toBe(0);
    expect(leftovers()).toEqual([]);

    // The same package again: nothing fetched.
    const again = serve(FILES);
    expect((await installFinalModels(state, 'site-1', offerOf(FILES), pinned, again.fetch)).alreadyInstalled).toBe(true);
    expect(again.fetched).toEqual([]);
    // A local file damaged since: fetched and replaced whole.
    writeFileSync(join(result.dir, 'global', 'weights.bin'), 'damaged');
    const repair = serve(FILES);
    expect((await installFinalModels(state, 'site-1', offerOf(FILES), pinned, repair.fetch)).alreadyInstalled).toBe(false);
    expect(readFileSync(join(result.dir, 'global', 'weights.bin')).length).toBe(5000);
    expect(leftovers()).toEqual([]);

    const listed = await listInstalledModels(state, { verify: true, pinned });
    expect(listed).toHaveLength(1);
    expect(listed[0]).toEqual(
      expect.objectContaining({ runId: RUN, signedBy: pinned.fingerprint, verified: true, ensemble: expect.objectContaining({ members: ['global', 'site-1'] }) }),
    );
    // The stand-in files are no saved models (the e2e test lists real ones), but the signature and the hashes hold.
    expect(listed[0].models).toEqual([]);
    expect(listed[0].problems).toEqual([expect.stringMatching(/^global: .*histofed-model\.json is missing/), expect.stringMatching(/^site-1: .*histofed-model\.json is missing/)]);
    // A file changed after the installation: verification says so.
    writeFileSync(join(result.dir, 'site-1', 'model.json'), '{"site":2}');
    const after = await listInstalledModels(state, { verify: true, pinned });
    expect(after[0].verified).toBe(false);
    expect(after[0].problems).toContain('site-1/model.json: SHA-256 differs from the signed one');
    // Checked against another pinned key: the signature does not verify.
    const elsewhere = mkdtempSync(join(tmpdir(), 'hf-other-'));
    const otherPin = (await pinCoordinatorKey(elsewhere, toBase64(generateSigningKeyPair().publicKey), 'http://other', 'enroll')).pin;
    rmSync(elsewhere, { recursive: true, force: true });
    const wrongKey = await listInstalledModels(state, { verify: true, pinned: otherPin });
    expect(wrongKey[0].problems).toContainEqual(expect.stringMatching(/^the signature does not verify with the pinned coordinator key/));
  });

  it('refuses a tampered file, and installs nothing', async () => {
    const pinned = await pin();
    const tampered = { ...FILES, 'site-1/weights.bin': new Uint8Array(5000).fill(3) };
    const err = await installFinalModels(state, 'site-1', offerOf(FILES), pinned, serve(tampered).fetch).catch((e) => e);
    expect(err).toBeInstanceOf(FinalModelsRefused);
    expect([err.refusalCode, err.message]).toEqual(['integrity', expect.stringMatching(/site-1\/weights\.bin: SHA-256 [0-9a-f]{64} differs from the signed/)]);
    const short = { ...FILES, 'global/model.json': text('{}') };
    expect(await installFinalModels(state, 'site-1', offerOf(FILES), pinned, serve(short).fetch).catch((e) => e.refusalCode)).toBe('integrity');
    expect(existsSync(join(state, 'models', RUN))).toBe(false);
    expect(leftovers()).toEqual([]);

    // A package installed before stays as it was when a new delivery of the run is refused.
    await installFinalModels(state, 'site-1', offerOf(FILES), pinned, serve(FILES).fetch);
    const changed = { ...FILES, 'site-1/weights.bin': new Uint8Array(6000).fill(4) };
    expect(await installFinalModels(state, 'site-1', offerOf(changed), pinned, serve({ ...changed, 'site-1/weights.bin': new Uint8Array(6000).fill(5) }).fetch).catch((e) => e.refusalCode)).toBe('integrity');
    expect(readFileSync(join(state, 'models', RUN, 'site-1', 'weights.bin'))[0]).toBe(2);
    expect(leftovers()).toEqual([]);
  });

  it('refuses a package signed by another key, with no key pinned, with a forged signature, or for another site', async () => {
    const { fetch, fetched } = serve(FILES);
    const refused = (offer: unknown, pinned: Awaited<ReturnType<typeof pin>> | null, siteId = 'site-1') =>
      installFinalModels(state, siteId, offer, pinned, fetch).then(
        () => 'installed',
        (e: FinalModelsRefused) => `${e.refusalCode}: ${e.message}`,
      );
    expect(await refused(offerOf(FILES), null)).toMatch(/^untrusted-key: .*no coordinator key is pinned/);
    const pinned = await pin();
    const impostor = generateSigningKeyPair();
    expect(await refused(offerOf(FILES, { key: impostor }), pinned)).toMatch(/^untrusted-key: .*signed by key .* this site pinned/);
    // Signed by someone else but naming the pinned key: the signature does not verify.
    const forged = { ...offerOf(FILES, { key: impostor }), coordinatorSignPublicKey: toBase64(coordinator.publicKey) };
    expect(await refused(forged, pinned)).toMatch(/^bad-signature: /);
    // A signed package changed afterwards (another hash for a file): the signature no longer covers it.
    const original = offerOf(FILES);
    const altered = { ...original, files: original.files.map((f) => (f.path === 'site-1/weights.bin' ? { ...f, sha256: sha(new Uint8Array(5000).fill(9)) } : f)) };
    expect(await refused(altered, pinned)).toMatch(/^bad-signature: /);
    // Another site's package (signed properly) is refused by this site.
    const theirs = offerOf({ ...FILES }, { siteId: 'site-2' });
    expect(await refused(theirs, pinned)).toMatch(/^invalid-message: .*for site site-2, this is site site-1/);
    expect(await refused({ ...original, files: [...original.files, { path: '../../outside', bytes: 1, sha256: sha(text('x')) }] }, pinned)).toMatch(/^invalid-message: /);
    expect(fetched).toEqual([]);
    expect(existsSync(join(state, 'models'))).toBe(false);
  });

  it('refuses an ensemble manifest naming a model the package does not hold', async () => {
    const pinned = await pin();
    const files = { ...FILES, [FINAL_MODELS_ENSEMBLE_FILE]: text('{"members":["global","site-2"]}') };
    expect(await installFinalModels(state, 'site-1', offerOf(files), pinned, serve(files).fetch).catch((e) => `${e.refusalCode}: ${e.message}`)).toMatch(
      /^invalid-message: .*must list models of the package/,
    );
    expect(leftovers()).toEqual([]);
  });
});
