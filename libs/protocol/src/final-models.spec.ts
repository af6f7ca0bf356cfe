import nacl from 'tweetnacl';
import {
  FINAL_MODELS_ENSEMBLE_FILE,
  FinalModelsPackage,
  finalModelsAckSchema,
  finalModelsOfferSchema,
  finalModelsPackageOf,
  finalModelsSignedBytes,
} from './index';

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
const hash = (c: string) => c.repeat(64);
const keys = nacl.sign.keyPair();

const pkg: FinalModelsPackage = {
  runId: '3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b',
  siteId: 'site-1',
  createdAt: '2025-01-01T00:00:00.000Z',
  secureAggregation: false,
  models: ['global@site-1', 'site-1'],
  files: [
    { path: 'global@site-1/model.json', bytes: 10, sha256: hash('a') },
    { path: 'global@site-1/weights.bin', bytes: 400, sha256: hash('b') },
    { path: 'site-1/model.json', bytes: 10, sha256: hash('c') },
    { path: FINAL_MODELS_ENSEMBLE_FILE, bytes: 50, sha256: hash('d') },
  ],
  coordinatorSignPublicKey: b64(keys.publicKey),
};
const offer = { ...pkg, signature: b64(nacl.sign.detached(finalModelsSignedBytes(pkg), keys.secretKey)), chunkBytes: 4096 };

describe('final models: the package format', () => {
  it('accepts a well-formed offer, and its signature covers the package', () => {
    const v = finalModelsOfferSchema.safeParse(offer);
    expect(v.success).toBe(true);
    const signed = finalModelsSignedBytes(finalModelsPackageOf(offer));
    expect(nacl.sign.detached.verify(signed, Buffer.from(offer.signature, 'base64'), keys.publicKey)).toBe(true);
  });

  it('signs run, site, time, mode, key, every model name and every path, size and hash', () => {
    const base = Buffer.from(finalModelsSignedBytes(pkg));
    const variants: FinalModelsPackage[] = [
      { ...pkg, runId: '3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5c' },
      { ...pkg, siteId: 'site-2' },
      { ...pkg, createdAt: '2025-01-01T00:00:00.001Z' },
      { ...pkg, secureAggregation: true },
      { ...pkg, coordinatorSignPublicKey: b64(nacl.sign.keyPair().publicKey) },
      { ...pkg, models: ['global@site-1', 'site-2'] },
      { ...pkg, files: pkg.files.map((f, i) => (i === 1 ? { ...f, sha256: hash('e') } : f)) },
      { ...pkg, files: pkg.files.map((f, i) => (i === 1 ? { ...f, bytes: 401 } : f)) },
      { ...pkg, files: pkg.files.map((f, i) => (i === 2 ? { ...f, path: 'site-1/other.json' } : f)) },
      { ...pkg, files: pkg.files.slice(0, 3) },
    ];
    for (const v of variants) expect(Buffer.from(finalModelsSignedBytes(v)).equals(base)).toBe(false);
    // The transport's chunk size is not signed: the package is the same.
    expect(Buffer.from(finalModelsSignedBytes(finalModelsPackageOf({ ...offer, chunkBytes: 8192 }))).equals(base)).toBe(true);
  });

  it('refuses paths outside the run directory, files of unlisted models, duplicates and oversized offers', () => {
    const bad = (files: { path: string; bytes: number; sha256: string }[], extra: Record<string, unknown> = {}) =>
      finalModelsOfferSchema.safeParse({ ...offer, files, ...extra }).success;
    const f = (path: string, bytes = 1) => ({ path, bytes, sha256: hash('a') });
    expect(bad([f('global@site-1/model.json'), f('site-1/model.json')])).toBe(true);
    for (const path of ['../model.json', '/etc/passwd', 'site-1/../../x', 'site-1/sub/model.json', 'site-1/.hidden', 'site-1/', '.', 'site-1\\x', 'x.json']) {
      expect([path, bad([f('global@site-1/model.json'), f('site-1/model.json'), f(path)])]).toEqual([path, false]);
    }
    expect(bad([f('global@site-1/model.json'), f('site-1/model.json'), f('site-2/model.json')])).toBe(false); // another site's model
    expect(bad([f('global@site-1/model.json'), f('site-1/model.json'), f('site-1/model.json')])).toBe(false); // twice
    expect(bad([f('global@site-1/model.json')])).toBe(false); // site-1 has no file
    expect(bad([f('global@site-1/model.json'), f('site-1/model.json')], { models: ['global@site-1', 'site-1', 'site-1'] })).toBe(false);
    expect(bad([f('global@site-1/model.json', 2 ** 31), f('site-1/model.json')])).toBe(false); // one file over 1 GiB
    expect(bad([f('global@site-1/model.json'), f('site-1/model.json')], { chunkBytes: 64 * 1024 * 1024 })).toBe(false);
    expect(bad([f('global@site-1/model.json'), f('site-1/model.json')], { extra: 1 })).toBe(false);
    expect(bad([f('global@site-1/model.json'), f('site-1/model.json')], { signature: 'AAAA' })).toBe(false);
  });

  it('acks name the installed models, or refuse with a code', () => {
    expect(finalModelsAckSchema.safeParse({ ok: true, runId: pkg.runId, siteId: 'site-1', installed: ['global'], alreadyInstalled: false }).success).toBe(true);
    expect(finalModelsAckSchema.safeParse({ ok: false, error: 'tampered', code: 'integrity' })).toEqual({ success: true, data: { ok: false, error: 'tampered', code: 'integrity' } });
    expect(finalModelsAckSchema.safeParse({ ok: true, runId: pkg.runId, siteId: 'site-1', installed: ['../x'], alreadyInstalled: false }).success).toBe(false);
  });
});
