import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { FeatureCache, featureCacheDirFor, featureCacheKey } from './feature-cache';

describe('FeatureCache', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-features-'));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  const parts = { image: 'a'.repeat(64), extractor: 'b'.repeat(64), size: 224, scale: 1, transform: null, grid: true, views: null };
  const rows = Float32Array.from({ length: 12 * 5 }, (_, i) => Math.sin(i) * 10);

  it('serves what was stored (a hit), misses an unknown key, and counts both', async () => {
    const cache = new FeatureCache({ dir: path.join(tmp, 'a') });
    const key = featureCacheKey(parts);
    expect(await cache.get(key, 5)).toBeUndefined();
    await cache.put(key, rows, 5);
    const hit = await cache.get(key, 5);
    expect(hit?.rows).toBe(12);
    expect(Array.from(hit?.values ?? [])).toEqual(Array.from(rows));
    expect(cache.stats()).toEqual(expect.objectContaining({ hits: 1, misses: 1, corrupt: 0 }));
    // Another process (a new instance on the same folder) hits too.
    expect((await new FeatureCache({ dir: path.join(tmp, 'a') }).get(key, 5))?.rows).toBe(12);
  });

  it('changes the key when any input changes, and not when only the order of fields does', () => {
    const key = featureCacheKey(parts);
    expect(featureCacheKey({ views: null, grid: true, transform: null, scale: 1, size: 224, extractor: parts.extractor, image: parts.image })).toBe(key);
    for (const change of [
      { image: 'c'.repeat(64) },
      { extractor: 'd'.repeat(64) },
      { size: 96 },
      { scale: 0.5 },
      { transform: '{"method":"macenko"}' },
      { grid: false },
      { views: { views: 8, seed: 1, augment: false, hedSigma: 0 } },
    ]) {
      expect(featureCacheKey({ ...parts, ...change })).not.toBe(key);
    }
    expect(featureCacheKey({ ...parts, views: { views: 8, seed: 1, augment: false, hedSigma: 0 } })).not.toBe(
      featureCacheKey({ ...parts, views: { views: 8, seed: 2, augment: false, hedSigma: 0 } }),
    );
  });

  it('treats a corrupt, truncated or differently shaped entry as a miss and deletes it', async () => {
    const cache = new FeatureCache({ dir: path.join(tmp, 'b') });
    const key = featureCacheKey({ ...parts, size: 1 });
    await cache.put(key, rows, 5);
    const file = cache.entryPath(key);
    const bytes = await readFile(file);
    bytes[bytes.length - 3] ^= 0xff;
    await writeFile(file, bytes);
    expect(await cache.get(key, 5)).toBeUndefined();
    await expect(stat(file)).rejects.toThrow();
    expect(cache.stats().corrupt).toBe(1);

    await cache.put(key, rows, 5);
    await truncate(file, 40);
    expect(await cache.get(key, 5)).toBeUndefined();
    expect(cache.stats().corrupt).toBe(2);

    await cache.put(key, rows, 5);
    expect(await cache.get(key, 6)).toBeUndefined();
    expect(cache.stats().corrupt).toBe(3);
    // Recomputed and stored again, it is served.
    await cache.put(key, rows, 5);
    expect((await cache.get(key, 5))?.rows).toBe(12);
  });

  it('refuses keys that are not SHA-256 hex and rows that do not divide, and lives beside the image cache', async () => {
    const cache = new FeatureCache({ dir: path.join(tmp, 'c') });
    expect(() => cache.entryPath('../../etc/passwd')).toThrow(/SHA-256/);
    await expect(cache.put(featureCacheKey(parts), new Float32Array(7), 5)).rejects.toThrow(/rows of 5/);
    expect(featureCacheDirFor('/x/images')).toBe(path.join('/x/images', 'features'));
  });

  it('only costs a recomputation when it cannot write', async () => {
    const blocker = path.join(tmp, 'file-not-dir');
    await writeFile(blocker, 'x');
    const cache = new FeatureCache({ dir: blocker });
    await cache.put(featureCacheKey(parts), rows, 5);
    expect(cache.stats().writeErrors).toBe(1);
    expect(await cache.get(featureCacheKey(parts), 5)).toBeUndefined();
  });
});
