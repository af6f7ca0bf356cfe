import { BREAKHIS_SUBTYPE_CODES } from '@histofed/fl-core';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { readBreakHisTree, type BreakHisImage } from './breakhis-reader';
import { DataError } from './data-error';
import { loadLabeledImages } from './image-loader';
import { generateSyntheticBreakHis } from './synthetic-breakhis';
import { REAL_SAMPLE_ROOT } from './test-paths';

describe('loadLabeledImages', () => {
  let tmp: string;
  let synthetic: BreakHisImage[];
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-loader-'));
    await generateSyntheticBreakHis(tmp, { patientsPerSubtype: 1, imagesPerPatient: 1, seed: 5 });
    synthetic = (await readBreakHisTree(tmp)).images;
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('decodes synthetic images into channels-last [0,1] floats with labels and patient groups', async () => {
    const batch = await loadLabeledImages(synthetic, 32);
    expect(batch.count).toBe(8);
    expect(batch.imageSize).toBe(32);
    expect(batch.images).toBeInstanceOf(Float32Array);
    expect(batch.images).toHaveLength(8 * 32 * 32 * 3);
    expect(Array.from(batch.labels)).toEqual(synthetic.map((i) => (i.label === 'malignant' ? 1 : 0)));
    expect(Array.from(batch.labels)).toEqual([0, 0, 0, 0, 1, 1, 1, 1]); // sorted benign subtypes first
    expect(batch.groups).toEqual(synthetic.map((i) => i.patientId));
    // One image of each subtype, in BREAKHIS_SUBTYPE_CODES order; magnifications from the names.
    expect(Array.from(batch.subtypes ?? [])).toEqual(synthetic.map((i) => BREAKHIS_SUBTYPE_CODES.indexOf(i.subtype)));
    expect(batch.magnifications).toEqual(synthetic.map((i) => i.magnification));
    let min = Infinity;
    let max = -Infinity;
    for (const v of batch.images) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
    expect(min).toBeGreaterThanOrEqual(0);
    expect(max).toBeLessThanOrEqual(1);
    expect(max - min).toBeGreaterThan(0.3); // real content, not a flat fill
    // Pink H&E: red channel brighter than green on average (checks channel order RGB, channels last).
    let r = 0;
    let g = 0;
    for (let k = 0; k < batch.images.length; k += 3) {
      r += batch.images[k];
      g += batch.images[k + 1];
    }
    expect(r).toBeGreaterThan(g * 1.1);
  });

  it('matches sharp pixel for pixel (values = bytes / 255) and keeps input order', async () => {
    const reversed = synthetic.slice(0, 3).reverse();
    const batch = await loadLabeledImages(reversed, 16, { concurrency: 2 });
    const expected = await sharp(reversed[1].path).resize(16, 16, { fit: 'cover' }).removeAlpha().raw().toBuffer();
    const second = batch.images.subarray(16 * 16 * 3, 2 * 16 * 16 * 3);
    expect(Array.from(second, (v) => Math.round(v * 255))).toEqual(Array.from(expected));
  });

  it('loads a real 700x460 BreakHis image, centre-cropped to a square', async () => {
    const real = (await readBreakHisTree(REAL_SAMPLE_ROOT)).images;
    const picks = [real[0], real.find((i) => i.label === 'malignant') as BreakHisImage];
    const batch = await loadLabeledImages(picks, 48);
    expect(batch.count).toBe(2);
    expect(batch.images).toHaveLength(2 * 48 * 48 * 3);
    expect(Array.from(batch.labels)).toEqual([0, 1]);
    expect(batch.groups).toEqual([picks[0].patientId, picks[1].patientId]);
    expect(Array.from(batch.subtypes ?? [], (j) => BREAKHIS_SUBTYPE_CODES[j])).toEqual([picks[0].subtype, picks[1].subtype]);
    const mean = batch.images.reduce((a, b) => a + b, 0) / batch.images.length;
    expect(mean).toBeGreaterThan(0.2);
    expect(mean).toBeLessThan(0.95);
    expect(batch.images.every((v) => v >= 0 && v <= 1)).toBe(true);
  });

  it('returns an empty batch for no images and rejects a bad size', async () => {
    const batch = await loadLabeledImages([], 8);
    expect(batch.count).toBe(0);
    expect(batch.images).toHaveLength(0);
    await expect(loadLabeledImages(synthetic, 0)).rejects.toThrow(/imageSize/);
  });

  it('throws DataError naming the file that cannot be decoded', async () => {
    const broken = path.join(tmp, 'broken.png');
    await writeFile(broken, Buffer.from('\x89PNG\r\n\x1a\nnot really'));
    const bad: BreakHisImage = { ...synthetic[0], path: broken };
    await expect(loadLabeledImages([synthetic[1], bad], 8)).rejects.toThrow(DataError);
    await expect(loadLabeledImages([bad], 8)).rejects.toThrow(`Cannot decode image ${broken}`);
  });
});
