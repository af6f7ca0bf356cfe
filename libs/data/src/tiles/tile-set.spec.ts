import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { readBreakHisTree, type BreakHisImage } from '../breakhis-reader';
import { hashSeed, mulberry32 } from '../prng';
import { generateSyntheticBreakHis } from '../synthetic-breakhis';
import { REAL_SAMPLE_ROOT } from '../test-paths';
import { parseClinicalCsv } from '../clinical/clinical-table';
import { FeatureCache } from './feature-cache';
import { loadModelInputs } from './model-inputs';
import { gridOrigins, randomOrigin } from './tile-geometry';
import { cropTile, decodeScaledImage, gridTiles, tileOrigins, viewTiles } from './tile-reader';
import { loadTileSet, type TileRowExtractor } from './tile-set';

/** A stand-in for a backbone: each tile's mean colour (3 values), counting its calls. */
function meanColour(): TileRowExtractor & { calls: number } {
  const e = {
    id: 'mean-colour-v1',
    rowShape: [3],
    calls: 0,
    async extract(tiles: Float32Array, count: number, size: number) {
      e.calls++;
      const out = new Float32Array(count * 3);
      const per = size * size * 3;
      for (let t = 0; t < count; t++) {
        for (let k = 0; k < per; k++) out[t * 3 + (k % 3)] += tiles[t * per + k] / (size * size);
      }
      return out;
    },
  };
  return e;
}

describe('tiles of BreakHis images', () => {
  let tmp: string;
  let images: BreakHisImage[];
  let real: BreakHisImage[];
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-tiles-'));
    await generateSyntheticBreakHis(path.join(tmp, 'data'), { patientsPerSubtype: 1, imagesPerPatient: 2, seed: 4 });
    images = (await readBreakHisTree(path.join(tmp, 'data'))).images;
    real = (await readBreakHisTree(REAL_SAMPLE_ROOT)).images;
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('decodes a real BreakHis image at native resolution or scaled, and its grid tiles are its pixels', async () => {
    const img = await decodeScaledImage(real[0].path, { size: 224, scale: 1 });
    expect([img.width, img.height]).toEqual([700, 460]);
    expect(img.pixels.every((v) => v >= 0 && v <= 1)).toBe(true);
    const half = await decodeScaledImage(real[0].path, { size: 224, scale: 0.5 });
    expect([half.width, half.height]).toEqual([350, 230]);
    const { tiles, count } = gridTiles(img, 224);
    expect(count).toBe(12);
    const origins = gridOrigins(700, 460, 224);
    const o = origins[5];
    const per = 224 * 224 * 3;
    // Tile 5, row 10, column 20 is pixel (o.x + 20, o.y + 10) of the image.
    for (let c = 0; c < 3; c++) {
      expect(tiles[5 * per + (10 * 224 + 20) * 3 + c]).toBe(img.pixels[((o.y + 10) * 700 + o.x + 20) * 3 + c]);
    }
    await expect(decodeScaledImage(path.join(tmp, 'missing.png'), { size: 224, scale: 1 })).rejects.toThrow(/missing.png/);
  });

  it('draws the same views of the same image every time, plain crops without augmentation', async () => {
    const img = await decodeScaledImage(real[1].path, { size: 64, scale: 0.25 });
    const options = { views: 5, seed: 3, augment: false as const, hedSigma: 0 };
    const a = viewTiles(img, 64, 'image-key', options);
    expect(viewTiles(img, 64, 'image-key', options).tiles).toEqual(a.tiles);
    expect(viewTiles(img, 64, 'other-key', options).tiles).not.toEqual(a.tiles);
    // View 2 is the crop at the position its own generator draws first.
    const rand = mulberry32(hashSeed(3, 'tile-view', 'image-key', 2));
    const at = randomOrigin(img.width, img.height, 64, rand);
    const expected = new Float32Array(64 * 64 * 3);
    cropTile(img, at, 64, expected);
    expect(a.tiles.subarray(2 * expected.length, 3 * expected.length)).toEqual(expected);
    const augmented = viewTiles(img, 64, 'image-key', { ...options, augment: {}, hedSigma: 0.05 });
    expect(augmented.tiles).not.toEqual(a.tiles);
    expect(augmented.tiles.every((v) => v >= 0 && v <= 1)).toBe(true);
  });

  it('builds rows per tile with their image, label and patient, and serves them from the cache the second time', async () => {
    const cache = new FeatureCache({ dir: path.join(tmp, 'cache') });
    const extractor = meanColour();
    const options = { geometry: { size: 32, scale: 1 }, extractor, cache, views: { views: 3, seed: 1, augment: false as const, hedSigma: 0 } };
    const set = await loadTileSet(images, options);
    const perImage = gridOrigins(140, 92, 32).length + 3;
    expect(set.count).toBe(images.length * perImage);
    expect(set.sampleShape).toEqual([3]);
    expect(set.images.length).toBe(set.count * 3);
    expect(set.imageSize).toBe(32);
    for (let r = 0; r < set.count; r++) {
      const image = images[(set.imageOf as Int32Array)[r]];
      expect(set.labels[r]).toBe(image.labelIndex);
      expect(set.groups?.[r]).toBe(image.patientId);
      expect(set.magnifications?.[r]).toBe(image.magnification);
    }
    expect(extractor.calls).toBe(images.length);
    const again = await loadTileSet(images, options);
    expect(extractor.calls).toBe(images.length);
    expect(again.images).toEqual(set.images);
    expect(cache.stats().hits).toBe(images.length);
    // Another transform (e.g. a stain normalization) is another entry.
    await loadTileSet(images, { ...options, transform: { key: 'invert', apply: (rgb: Float32Array) => rgb.map((v) => 1 - v) } });
    expect(extractor.calls).toBe(2 * images.length);
  });

  it('gives pixel rows without an extractor, and the model inputs a spec asks for', async () => {
    const pixels = await loadTileSet(images.slice(0, 2), { geometry: { size: 32, scale: 1 } });
    expect(pixels.sampleShape).toBeUndefined();
    expect(pixels.images.length).toBe(pixels.count * 32 * 32 * 3);
    const spec = { kind: 'backbone-head', imageSize: 32, numClasses: 2, tiles: { scale: 1, views: 4 } };
    const extractor = meanColour();
    const evaluation = await loadModelInputs(images.slice(0, 2), spec, { extractor });
    const training = await loadModelInputs(images.slice(0, 2), spec, { extractor, training: true });
    expect(training.count - evaluation.count).toBe(2 * 4);
    const whole = await loadModelInputs(images.slice(0, 2), { kind: 'se-cnn', imageSize: 24, numClasses: 2 });
    expect(whole.count).toBe(2);
    expect(whole.imageOf).toBeUndefined();
  });

  it("follows each row of a fusion spec (model.clinical) with its patient's record, or the no-record encoding", async () => {
    const clinical = { columns: [{ name: 'age', type: 'numeric' as const, min: 20, max: 90 }] };
    const spec = { kind: 'backbone-head', imageSize: 32, numClasses: 2, tiles: { scale: 1, views: 0 }, clinical };
    const two = [images[0], images.find((i) => i.patientId !== images[0].patientId) as BreakHisImage];
    const table = parseClinicalCsv(`patient,age\n${two[0].patientId},55\n`, clinical, 'clinical.csv');
    const rows = await loadModelInputs(two, spec, { extractor: meanColour(), clinical: table });
    expect(rows.sampleShape).toEqual([3 + 3]);
    const plain = await loadModelInputs(two, { ...spec, clinical: undefined }, { extractor: meanColour() });
    for (let r = 0; r < rows.count; r++) {
      const row = Array.from(rows.images.subarray(r * 6, r * 6 + 6));
      expect(row.slice(0, 3)).toEqual(Array.from(plain.images.subarray(r * 3, r * 3 + 3)));
      // [age scaled to [0, 1], missing, no record]: the first patient has a row, the second none.
      expect(row.slice(3)).toEqual(rows.groups?.[r] === two[0].patientId ? [0.5, 0, 0] : [0, 0, 1]);
    }
    // No table at all: every patient takes the no-record path.
    const none = await loadModelInputs(two, spec, { extractor: meanColour() });
    for (let r = 0; r < none.count; r++) expect(Array.from(none.images.subarray(r * 6 + 3, r * 6 + 6))).toEqual([0, 0, 1]);
    await expect(loadModelInputs(two, { kind: 'se-cnn', imageSize: 24, numClasses: 2, clinical })).rejects.toThrow(/model.clinical: .*not whole images/);
  });

  it('jitters the stain of augmented training views by the hedSigma asked for (0: none)', async () => {
    const spec = { kind: 'backbone-head', imageSize: 32, numClasses: 2, tiles: { scale: 0.25, views: 2 } };
    const rows = async (hedSigma?: number) =>
      (await loadModelInputs(images.slice(0, 2), spec, { extractor: meanColour(), training: true, augment: true, ...(hedSigma === undefined ? {} : { hedSigma }) })).images;
    const none = await rows(0);
    const strong = await rows(0.3);
    expect(Array.from(await rows(0.3))).toEqual(Array.from(strong)); // reproducible
    expect(Array.from(strong)).not.toEqual(Array.from(none));
    expect(Array.from(await rows())).not.toEqual(Array.from(strong)); // the default is 0.05
  });

  it('places every tile row (grid, then views) where it was cut, from the cache too, and packs bag rows for the bag models', async () => {
    const cache = new FeatureCache({ dir: path.join(tmp, 'position-cache') });
    const views = { views: 3, seed: 7, augment: false as const, hedSigma: 0 };
    const options = { geometry: { size: 224, scale: 1 }, extractor: meanColour(), cache, views, positions: true };
    const first = await loadTileSet(real.slice(0, 2), options);
    const again = await loadTileSet(real.slice(0, 2), options); // from the cache: no decode
    expect(Array.from(again.tilePositions as Float32Array)).toEqual(Array.from(first.tilePositions as Float32Array));
    expect(first.count).toBe(2 * (12 + 3));
    // Row k of image 0 is the tile at tileOrigins(...)[k]: its mean colour is that crop's.
    const img = await decodeScaledImage(real[0].path, { size: 224, scale: 1 });
    const { createHash } = await import('node:crypto');
    const { readFile } = await import('node:fs/promises');
    const hash = createHash('sha256').update(await readFile(real[0].path)).digest('hex');
    const origins = tileOrigins(img.width, img.height, 224, { grid: true, views: 3, seed: 7 }, hash);
    expect(origins.slice(0, 12)).toEqual(gridOrigins(700, 460, 224));
    const crop = new Float32Array(224 * 224 * 3);
    for (const k of [0, 11, 12, 14]) {
      cropTile(img, origins[k], 224, crop);
      const mean = [0, 0, 0];
      crop.forEach((v, j) => (mean[j % 3] += v / (224 * 224)));
      for (let c = 0; c < 3; c++) expect(first.images[k * 3 + c]).toBeCloseTo(mean[c], 4);
      expect(first.tilePositions?.[k * 2]).toBeCloseTo((origins[k].y + 112) / 460, 6);
      expect(first.tilePositions?.[k * 2 + 1]).toBeCloseTo((origins[k].x + 112) / 700, 6);
    }

    // Bag models: one row per image of [bagTiles, features + mask, y, x].
    const spec = { kind: 'attention-mil', imageSize: 224, numClasses: 2, tiles: { scale: 1, views: 3 }, options: { bagTiles: 16 } };
    const bags = await loadModelInputs(real.slice(0, 2), spec, { extractor: meanColour(), training: true });
    expect(bags.count).toBe(2);
    expect(bags.imageOf).toBeUndefined();
    expect(bags.sampleShape).toEqual([16, 6]);
    expect(Array.from(bags.labels)).toEqual([real[0].labelIndex, real[1].labelIndex]);
    expect(bags.groups).toEqual([real[0].patientId, real[1].patientId]);
    const slot = (b: number, k: number) => Array.from(bags.images.subarray((b * 16 + k) * 6, (b * 16 + k + 1) * 6));
    expect(slot(1, 0).slice(0, 3).map((v, c) => v - first.images[15 * 3 + c]).every((d) => Math.abs(d) < 1e-6)).toBe(true);
    expect(slot(1, 14)[3]).toBe(1); // 12 grid + 3 views = 15 real slots
    expect(slot(1, 15)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(slot(0, 5)[4]).toBeCloseTo(first.tilePositions?.[5 * 2] as number, 6); // a grid tile (the views' seed differs)
    expect(slot(0, 5)[5]).toBeCloseTo(first.tilePositions?.[5 * 2 + 1] as number, 6);
    // Evaluation bags: the grid only; an image with more grid tiles than slots is named.
    const evaluation = await loadModelInputs(real.slice(0, 1), spec, { extractor: meanColour() });
    expect(evaluation.images[(11 * 6) + 3]).toBe(1);
    expect(evaluation.images[(12 * 6) + 3]).toBe(0);
    const small = { ...spec, options: { bagTiles: 8 } };
    await expect(loadModelInputs(real.slice(0, 1), small, { extractor: meanColour() })).rejects.toThrow(new RegExp(`${real[0].path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has 12 tiles, the model's bags hold 8`));
    const truncated = await loadModelInputs(real.slice(0, 1), small, { extractor: meanColour(), training: true });
    expect(truncated.sampleShape).toEqual([8, 6]);
    expect(Array.from(truncated.images.subarray(0, 8 * 6)).filter((_, j) => j % 6 === 3)).toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
  });
});
