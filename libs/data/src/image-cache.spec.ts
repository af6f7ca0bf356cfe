import { ValidationError } from '@histofed/fl-core';
import { copyFile, mkdtemp, readdir, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { readBreakHisTree, type BreakHisImage } from './breakhis-reader';
import { DataError } from './data-error';
import { ImageCache, decodeSquareRgb, defaultImageCacheDir } from './image-cache';
import { loadLabeledImages } from './image-loader';
import { generateSyntheticBreakHis } from './synthetic-breakhis';
import { REAL_SAMPLE_ROOT } from './test-paths';

/** Every file below `dir` with the given extension. */
async function filesBelow(dir: string, ext: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith(ext)) out.push(path.join(entry.parentPath ?? entry.path, entry.name));
  }
  return out.sort();
}

describe('ImageCache', () => {
  let tmp: string;
  let images: BreakHisImage[];
  let cacheCount = 0;
  /** A fresh cache folder per test. */
  const freshDir = () => path.join(tmp, `cache-${++cacheCount}`);

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-cache-'));
    await generateSyntheticBreakHis(path.join(tmp, 'data'), { patientsPerSubtype: 1, imagesPerPatient: 1, seed: 3 });
    images = (await readBreakHisTree(path.join(tmp, 'data'))).images;
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('decodes on a miss, serves hits without decoding, and a second run neither decodes nor hashes', async () => {
    const dir = freshDir();
    const cache = new ImageCache({ dir });
    const first = [];
    for (const image of images) first.push(await cache.get(image, 24));
    expect(cache.stats()).toMatchObject({ misses: 8, decodes: 8, hits: 0, hashed: 8, corrupt: 0, writeErrors: 0 });
    expect(cache.stats().bytesWritten).toBe(8 * (24 * 24 * 3 + 24));
    expect(first[0]).toHaveLength(24 * 24 * 3);
    expect(Buffer.from(first[2])).toEqual(await decodeSquareRgb(images[2].path, 24));

    // Second epoch, same instance.
    for (let i = 0; i < images.length; i++) expect(await cache.get(images[i], 24)).toEqual(first[i]);
    expect(cache.stats()).toMatchObject({ hits: 8, misses: 8, decodes: 8, hashed: 8, indexHits: 8 });
    await cache.flush();

    // Second run: a new instance on the same folder trusts the persisted path index.
    const again = new ImageCache({ dir });
    for (let i = 0; i < images.length; i++) expect(await again.get(images[i], 24)).toEqual(first[i]);
    expect(again.stats()).toMatchObject({ hits: 8, misses: 0, decodes: 0, hashed: 0, indexHits: 8 });
    expect(again.stats().bytesRead).toBe(8 * (24 * 24 * 3 + 24));

    // Another size is another entry.
    await again.get(images[0], 16);
    expect(again.stats()).toMatchObject({ misses: 1, decodes: 1 });
    expect(await filesBelow(dir, '.rgb')).toHaveLength(9);
  });

  it('keys entries by content: a copy under another path hits, a modified file misses', async () => {
    const dir = freshDir();
    const cache = new ImageCache({ dir });
    const original = await cache.get(images[0], 20);
    const copy = path.join(tmp, 'copy-of-first.png');
    await copyFile(images[0].path, copy);
    expect(await cache.get({ path: copy }, 20)).toEqual(original);
    expect(cache.stats()).toMatchObject({ decodes: 1, hits: 1, hashed: 2 });
    expect(await cache.entryPath({ path: copy }, 20)).toBe(await cache.entryPath(images[0], 20));

    // Overwrite the copy with another image's bytes (the size or mtime changes): rehashed, decoded.
    await copyFile(images[5].path, copy);
    const later = new Date(Date.now() + 5000);
    await utimes(copy, later, later);
    const modified = await cache.get({ path: copy }, 20);
    expect(cache.stats()).toMatchObject({ decodes: 2, hashed: 3 });
    expect(Buffer.from(modified)).toEqual(await decodeSquareRgb(images[5].path, 20));
    // ... and it now shares images[5]'s entry.
    await cache.get(images[5], 20);
    expect(cache.stats()).toMatchObject({ decodes: 2, hits: 2 });
  });

  it('trusts the path index only when file size and mtime match', async () => {
    const dir = freshDir();
    const file = path.join(tmp, 'touched.png');
    await copyFile(images[1].path, file);
    const first = new ImageCache({ dir });
    await first.get({ path: file }, 12);
    await first.flush();
    // Same bytes, new mtime: hashed again (not trusted), but the entry still hits.
    const later = new Date(Date.now() + 60_000);
    await utimes(file, later, later);
    const second = new ImageCache({ dir });
    await second.get({ path: file }, 12);
    expect(second.stats()).toMatchObject({ hashed: 1, indexHits: 0, hits: 1, decodes: 0 });
  });

  it('discards a truncated, garbled or checksum-failing entry, decodes again and rewrites it', async () => {
    const dir = freshDir();
    const cache = new ImageCache({ dir });
    const good = await cache.get(images[3], 16);
    const entry = await cache.entryPath(images[3], 16);
    expect((await stat(entry)).size).toBe(24 + 16 * 16 * 3);

    await truncate(entry, 100);
    expect(await cache.get(images[3], 16)).toEqual(good);
    expect(cache.stats()).toMatchObject({ corrupt: 1, decodes: 2 });
    expect((await stat(entry)).size).toBe(24 + 16 * 16 * 3);

    const bytes = await readFile(entry);
    bytes[24 + 100] ^= 0x40; // one flipped bit in the pixels: the CRC catches it
    await writeFile(entry, bytes);
    expect(await cache.get(images[3], 16)).toEqual(good);
    expect(cache.stats()).toMatchObject({ corrupt: 2, decodes: 3 });

    await writeFile(entry, Buffer.alloc(24 + 16 * 16 * 3, 7)); // right length, wrong header
    expect(await cache.get(images[3], 16)).toEqual(good);
    expect(cache.stats()).toMatchObject({ corrupt: 3, decodes: 4 });

    await writeFile(entry, '');
    expect(await cache.get(images[3], 16)).toEqual(good);
    expect(cache.stats()).toMatchObject({ corrupt: 4, decodes: 5 });

    // Repaired: the next get is a plain hit.
    expect(await cache.get(images[3], 16)).toEqual(good);
    expect(cache.stats()).toMatchObject({ corrupt: 4, decodes: 5, hits: 1 });
  });

  it('ignores a corrupt path index and leaves no temp files behind', async () => {
    const dir = freshDir();
    const cache = new ImageCache({ dir });
    await cache.get(images[0], 8);
    await cache.flush();
    const [index] = await filesBelow(dir, 'path-index.json');
    expect(index).toBeDefined();
    await writeFile(index, '{"version":1,"entries":{"x":[1,2');
    const again = new ImageCache({ dir });
    await again.get(images[0], 8);
    expect(again.stats()).toMatchObject({ hashed: 1, hits: 1, decodes: 0 });
    await again.flush();
    expect(JSON.parse(await readFile(index, 'utf8')).entries[images[0].path][2]).toMatch(/^[0-9a-f]{64}$/);
    expect(await filesBelow(dir, '.tmp')).toEqual([]);
  });

  it('decodes once for concurrent gets of one key, and every caller gets its own array', async () => {
    const dir = freshDir();
    const cache = new ImageCache({ dir });
    const copy = path.join(tmp, 'concurrent-copy.png');
    await copyFile(images[4].path, copy);
    const results = await Promise.all([
      cache.get(images[4], 32),
      cache.get(images[4], 32),
      cache.get({ path: copy }, 32),
      cache.get(images[4], 32),
    ]);
    // One decode; the other three wait for it (joined) or, when the copy is hashed only after the
    // decode has finished (a loaded machine), find its result (a hit): never a second decode.
    const stats = cache.stats();
    expect(stats).toMatchObject({ decodes: 1, misses: 1 });
    expect(stats.joined + stats.hits).toBe(3);
    expect(stats.joined).toBeGreaterThanOrEqual(2);
    for (const r of results) expect(r).toEqual(results[0]);
    results[0][0] ^= 0xff;
    expect(results[1][0]).not.toBe(results[0][0]);
    expect(new Set(results.map((r) => r.buffer)).size).toBe(4);
  });

  it('still returns pixels when the cache folder cannot be written', async () => {
    const blocker = path.join(tmp, 'not-a-folder');
    await writeFile(blocker, 'a file where the cache folder should be');
    const cache = new ImageCache({ dir: blocker });
    const pixels = await cache.get(images[6], 10);
    expect(Buffer.from(pixels)).toEqual(await decodeSquareRgb(images[6].path, 10));
    await cache.flush();
    expect(cache.stats().writeErrors).toBeGreaterThanOrEqual(1);
  });

  it('throws DataError for unreadable or undecodable files and caches nothing', async () => {
    const dir = freshDir();
    const cache = new ImageCache({ dir });
    const broken = path.join(tmp, 'broken.png');
    await writeFile(broken, Buffer.from('\x89PNG\r\n\x1a\nnot really'));
    await expect(cache.get({ path: broken }, 8)).rejects.toThrow(DataError);
    await expect(cache.get({ path: broken }, 8)).rejects.toThrow(`Cannot decode image ${broken}`);
    await expect(cache.get({ path: path.join(tmp, 'missing.png') }, 8)).rejects.toThrow(/Cannot read image/);
    expect(cache.stats().decodes).toBe(0);
    expect(await filesBelow(dir, '.rgb').catch(() => [])).toEqual([]);
    await expect(cache.get(images[0], 0)).rejects.toThrow(ValidationError);
    expect(() => new ImageCache({ dir, fit: 'contain' as 'cover' })).toThrow(/fit/);
  });

  it('keys by resize mode: fill and cover are separate entries', async () => {
    const dir = freshDir();
    const cover = await new ImageCache({ dir }).get(images[0], 16);
    const fillCache = new ImageCache({ dir, fit: 'fill' });
    const fill = await fillCache.get(images[0], 16);
    expect(fillCache.stats().decodes).toBe(1);
    expect(fill).not.toEqual(cover);
    expect(Buffer.from(fill)).toEqual(await decodeSquareRgb(images[0].path, 16, 'fill'));
  });

  it('defaults to a per-user cache folder', () => {
    expect(defaultImageCacheDir({ HISTOFED_CACHE_DIR: '/x/cache' })).toBe(path.resolve('/x/cache/images'));
    expect(defaultImageCacheDir({ XDG_CACHE_HOME: '/home/u/.cache' })).toBe(path.resolve('/home/u/.cache/histofed/images'));
    expect(defaultImageCacheDir({})).toMatch(/histofed[/\\](cache[/\\])?images$/);
    expect(new ImageCache({ dir: 'relative/cache' }).dir).toBe(path.resolve('relative/cache'));
  });

  describe('loadLabeledImages with a cache and a transform', () => {
    it('gives the same values with and without the cache, and decodes nothing the second time', async () => {
      const cache = new ImageCache({ dir: freshDir() });
      const plain = await loadLabeledImages(images, 20);
      const cold = await loadLabeledImages(images, 20, { cache });
      const warm = await loadLabeledImages(images, 20, { cache });
      expect(cold.images).toEqual(plain.images);
      expect(warm.images).toEqual(plain.images);
      expect(warm.groups).toEqual(plain.groups);
      expect(cache.stats()).toMatchObject({ decodes: 8, hits: 8 });
    });

    it('applies the pixel hook to each image after scaling to [0,1]', async () => {
      const seen: string[] = [];
      const batch = await loadLabeledImages(images.slice(0, 3), 8, {
        transform: (rgb, image, size) => {
          seen.push(`${image.patientId}:${rgb.length}:${size}`);
          expect(Math.max(...rgb)).toBeLessThanOrEqual(1);
          for (let k = 0; k < rgb.length; k += 3) rgb[k] = 0.25; // red channel fixed
        },
      });
      expect(seen.sort()).toEqual(images.slice(0, 3).map((i) => `${i.patientId}:192:8`).sort());
      for (let k = 0; k < batch.images.length; k += 3) expect(batch.images[k]).toBe(0.25);
      const plain = await loadLabeledImages(images.slice(0, 3), 8);
      expect(batch.images[1]).toBe(plain.images[1]);

      // A hook may return new pixels instead (the stain module's `(pixels) => pixels` shape).
      const inverted = await loadLabeledImages(images.slice(0, 3), 8, { transform: (rgb) => rgb.map((v) => 1 - v) });
      expect(inverted.images[5]).toBeCloseTo(1 - plain.images[5], 6);
      await expect(loadLabeledImages(images.slice(0, 1), 8, { transform: () => new Float32Array(3) })).rejects.toThrow(
        /transform returned 3 values/,
      );
    });
  });

  it('on the real sample, cached values equal uncached values', async () => {
    const real = (await readBreakHisTree(REAL_SAMPLE_ROOT)).images;
    const picks = [real[0], real[Math.floor(real.length / 2)], real[real.length - 1]];
    const cache = new ImageCache({ dir: freshDir() });
    const uncached = await loadLabeledImages(picks, 64);
    const cold = await loadLabeledImages(picks, 64, { cache });
    const second = new ImageCache({ dir: cache.dir });
    const warm = await loadLabeledImages(picks, 64, { cache: second });
    expect(cold.images).toEqual(uncached.images);
    expect(warm.images).toEqual(uncached.images);
    expect(second.stats()).toMatchObject({ hits: 3, decodes: 0, hashed: 0 });
  });
});
