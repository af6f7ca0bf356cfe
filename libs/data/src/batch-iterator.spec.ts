import { ValidationError } from '@histofed/fl-core';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { augmentationRandom, augmentImage } from './augmentation';
import { batchCount, epochOrder, iterateBatches, type BatchIteratorOptions, type ImageBatch } from './batch-iterator';
import { readBreakHisTree, type BreakHisImage } from './breakhis-reader';
import { DataError } from './data-error';
import { ImageCache } from './image-cache';
import { loadLabeledImages } from './image-loader';
import { generateSyntheticBreakHis } from './synthetic-breakhis';

async function collect(images: readonly BreakHisImage[], options: BatchIteratorOptions): Promise<ImageBatch[]> {
  const out: ImageBatch[] = [];
  for await (const batch of iterateBatches(images, options)) out.push(batch);
  return out;
}

/** Pixels of each image by its input index, from a list of batches. */
function byIndex(batches: ImageBatch[]): Map<number, Float32Array> {
  const out = new Map<number, Float32Array>();
  for (const b of batches) {
    const per = b.imageSize * b.imageSize * 3;
    b.indices.forEach((index, slot) => out.set(index, b.images.slice(slot * per, (slot + 1) * per)));
  }
  return out;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('iterateBatches', () => {
  let tmp: string;
  let images: BreakHisImage[];
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-batches-'));
    await generateSyntheticBreakHis(path.join(tmp, 'data'), { patientsPerSubtype: 2, imagesPerPatient: 2, width: 40, height: 28, seed: 8 });
    images = (await readBreakHisTree(path.join(tmp, 'data'))).images;
    expect(images).toHaveLength(32);
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('yields every image exactly once per epoch, with a last partial batch', async () => {
    const batches = await collect(images, { imageSize: 8, batchSize: 10, seed: 1 });
    expect(batches.map((b) => b.count)).toEqual([10, 10, 10, 2]);
    expect(batches.map((b) => b.batchIndex)).toEqual([0, 1, 2, 3]);
    expect(batchCount(32, 10)).toBe(4);
    const seen = batches.flatMap((b) => Array.from(b.indices));
    expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: 32 }, (_, i) => i));
    expect(seen).toEqual(epochOrder(32, 1, 0));
    expect(seen).not.toEqual(Array.from({ length: 32 }, (_, i) => i)); // shuffled
    for (const b of batches) {
      expect(b.images).toHaveLength(b.count * 8 * 8 * 3);
      expect(b.imageSize).toBe(8);
      expect(b.epoch).toBe(0);
      expect(Array.from(b.labels)).toEqual(Array.from(b.indices, (i) => images[i].labelIndex));
      expect(b.groups).toEqual(Array.from(b.indices, (i) => images[i].patientId));
    }

    const dropped = await collect(images, { imageSize: 8, batchSize: 10, seed: 1, dropLast: true });
    expect(dropped.map((b) => b.count)).toEqual([10, 10, 10]);
    expect(dropped.flatMap((b) => Array.from(b.indices))).toEqual(seen.slice(0, 30));

    const ordered = await collect(images, { imageSize: 8, batchSize: 32, seed: 1, shuffle: false });
    expect(Array.from(ordered[0].indices)).toEqual(Array.from({ length: 32 }, (_, i) => i));
    expect(await collect([], { imageSize: 8, batchSize: 4, seed: 1 })).toEqual([]);
  });

  it('is deterministic from (seed, epoch), whatever the batch size, prefetch or concurrency', async () => {
    const augment = {};
    const a = await collect(images, { imageSize: 12, batchSize: 8, seed: 5, epoch: 2, augment });
    const b = await collect(images, { imageSize: 12, batchSize: 8, seed: 5, epoch: 2, augment, prefetch: 0, concurrency: 1 });
    expect(b.map((x) => Array.from(x.indices))).toEqual(a.map((x) => Array.from(x.indices)));
    for (let i = 0; i < a.length; i++) expect(b[i].images).toEqual(a[i].images);

    // Another batch size: other batches, but each image's augmented pixels are the same.
    const c = await collect(images, { imageSize: 12, batchSize: 5, seed: 5, epoch: 2, augment, prefetch: 3 });
    const pa = byIndex(a);
    const pc = byIndex(c);
    for (const [index, pixels] of pa) expect(pc.get(index)).toEqual(pixels);

    const otherEpoch = await collect(images, { imageSize: 12, batchSize: 8, seed: 5, epoch: 3, augment });
    expect(otherEpoch.flatMap((x) => Array.from(x.indices))).not.toEqual(a.flatMap((x) => Array.from(x.indices)));
    const po = byIndex(otherEpoch);
    expect([...pa.keys()].filter((i) => pa.get(i)!.every((v, k) => v === po.get(i)![k])).length).toBeLessThan(4);
  });

  it('matches loadLabeledImages then augmentImage, pixel for pixel, and values stay in [0,1]', async () => {
    const batches = await collect(images, { imageSize: 10, batchSize: 7, seed: 9, augment: { maxZoom: 0.1 } });
    const plain = await loadLabeledImages(images, 10);
    const per = 10 * 10 * 3;
    const got = byIndex(batches);
    for (const index of [0, 13, 31]) {
      const expected = plain.images.slice(index * per, (index + 1) * per);
      augmentImage(expected, 10, augmentationRandom(9, 0, index), { maxZoom: 0.1 });
      expect(got.get(index)).toEqual(expected);
    }
    const all = batches.flatMap((b) => Array.from(b.images));
    expect(Math.min(...all)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...all)).toBeLessThanOrEqual(1);

    const unaugmented = byIndex(await collect(images, { imageSize: 10, batchSize: 7, seed: 9 }));
    expect(unaugmented.get(13)).toEqual(plain.images.slice(13 * per, 14 * per));
  });

  it('applies the transform before augmentation, and reads through the cache (second epoch decodes nothing)', async () => {
    const cache = new ImageCache({ dir: path.join(tmp, 'cache') });
    const transformed: number[] = [];
    const transform = (rgb: Float32Array, image: BreakHisImage) => {
      transformed.push(images.indexOf(image));
      rgb.fill(0.5);
    };
    const epoch0 = await collect(images, { imageSize: 8, batchSize: 6, seed: 2, cache, transform, augment: {} });
    expect(cache.stats()).toMatchObject({ decodes: 32, misses: 32 });
    expect(transformed.sort((a, b) => a - b)).toEqual(Array.from({ length: 32 }, (_, i) => i));
    // Flat grey in, so flips and zoom change nothing and the jitter keeps it grey: R = G = B.
    const px = epoch0[0].images;
    for (let k = 0; k < px.length; k += 3) expect(px[k + 1]).toBeCloseTo(px[k], 6);
    await collect(images, { imageSize: 8, batchSize: 6, seed: 2, epoch: 1, cache });
    expect(cache.stats()).toMatchObject({ decodes: 32, hits: 32 });
  });

  it('reads ahead at most `prefetch` batches while the consumer holds one', async () => {
    const real = new ImageCache({ dir: path.join(tmp, 'cache-prefetch') });
    for (const prefetch of [0, 1, 3]) {
      const order = epochOrder(images.length, 4, 0);
      const batchOf = new Map(order.map((imageIndex, position) => [imageIndex, Math.floor(position / 4)]));
      // A cache that records when each image is asked for, i.e. when its decode starts.
      let furthest = -1;
      const spy = {
        get: (image: BreakHisImage, size: number) => {
          furthest = Math.max(furthest, batchOf.get(images.indexOf(image))!);
          return real.get(image, size);
        },
        flush: () => real.flush(),
      } as unknown as ImageCache;
      const ahead: number[] = [];
      for await (const batch of iterateBatches(images, { imageSize: 8, batchSize: 4, seed: 4, prefetch, cache: spy })) {
        ahead.push(furthest - batch.batchIndex);
        await sleep(5); // the consumer "trains"; the read-ahead runs meanwhile but starts nothing new
        ahead.push(furthest - batch.batchIndex);
      }
      expect(ahead).toHaveLength(16);
      // While holding batch k, batches k+1..k+prefetch are being prepared, never more.
      expect(Math.max(...ahead)).toBe(prefetch);
      expect(ahead.slice(0, 2)).toEqual([prefetch, prefetch]);
    }
  });

  it('rejects with DataError on a broken file, and stopping early leaves nothing running', async () => {
    const broken = path.join(tmp, 'broken.png');
    await writeFile(broken, Buffer.from('\x89PNG\r\n\x1a\nnot really'));
    const withBroken = [...images.slice(0, 9), { ...images[9], path: broken }];
    await expect(collect(withBroken, { imageSize: 8, batchSize: 3, seed: 1, shuffle: false })).rejects.toThrow(DataError);
    // The batches before the broken one are delivered.
    const delivered: number[] = [];
    await expect(
      (async () => {
        for await (const b of iterateBatches(withBroken, { imageSize: 8, batchSize: 3, seed: 1, shuffle: false, prefetch: 3 })) {
          delivered.push(b.batchIndex);
        }
      })(),
    ).rejects.toThrow(`Cannot decode image ${broken}`);
    expect(delivered).toEqual([0, 1, 2]);

    const cache = new ImageCache({ dir: path.join(tmp, 'cache-early') });
    for await (const b of iterateBatches(images, { imageSize: 8, batchSize: 4, seed: 1, prefetch: 2, cache })) {
      expect(b.batchIndex).toBe(0);
      break;
    }
    // Batches already started were finished (and cached) before the loop returned.
    expect(cache.stats().decodes).toBe(12);
  });

  it('rejects bad options', async () => {
    const bad = (o: Partial<BatchIteratorOptions>) => collect(images, { imageSize: 8, batchSize: 4, seed: 1, ...o });
    await expect(bad({ batchSize: 0 })).rejects.toThrow(ValidationError);
    await expect(bad({ imageSize: 2.5 })).rejects.toThrow(/imageSize/);
    await expect(bad({ prefetch: -1 })).rejects.toThrow(/prefetch/);
    await expect(bad({ epoch: -1 })).rejects.toThrow(/epoch/);
    await expect(bad({ augment: { hue: 2 } })).rejects.toThrow(/hue/);
  });

  it('streams 320 images at 128 px with memory bounded by the read-ahead, not the dataset', async () => {
    const dir = path.join(tmp, 'many');
    await generateSyntheticBreakHis(dir, { patientsPerSubtype: 5, imagesPerPatient: 8, width: 48, height: 32, seed: 2 });
    const many = (await readBreakHisTree(dir)).images;
    expect(many).toHaveLength(320);
    const imageSize = 128;
    const datasetBytes = many.length * imageSize * imageSize * 3 * 4; // 63 MB as one Float32Array
    // Live memory, not garbage the collector has not reached yet: collect before each sample.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const used = () => {
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const base = used();
    let peak = base;
    let count = 0;
    let checksum = 0;
    for await (const batch of iterateBatches(many, { imageSize, batchSize: 16, seed: 3, prefetch: 2, augment: { maxZoom: 0 } })) {
      count += batch.count;
      checksum += batch.images[0];
      peak = Math.max(peak, used());
    }
    expect(count).toBe(320);
    expect(checksum).toBeGreaterThan(0);
    // Live data is about (prefetch + 2) batches of 16 x 196 KB (~12.6 MB), far from the 63 MB the
    // whole dataset would take.
    expect(peak - base).toBeLessThan(datasetBytes / 3);
  }, 30_000);
});
