import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { BREAKHIS_MAGNIFICATIONS, BREAKHIS_SUBTYPES } from './breakhis-names';
import { readBreakHisTree, type BreakHisDataset } from './breakhis-reader';
import { generateSyntheticBreakHis } from './synthetic-breakhis';

const OPTS = { patientsPerSubtype: 2, imagesPerPatient: 4, seed: 7 } as const;

describe('generateSyntheticBreakHis', () => {
  let tmp: string;
  let first: BreakHisDataset;
  let result: { images: number; patients: number };

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-synth-'));
    result = await generateSyntheticBreakHis(path.join(tmp, 'a'), OPTS);
    first = await readBreakHisTree(path.join(tmp, 'a'));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('writes a BreakHis tree that the reader accepts without problems', () => {
    expect(result).toEqual({ images: 8 * 2 * 4, patients: 16 });
    expect(first.problems).toEqual([]);
    expect(first.images).toHaveLength(64);
    expect(first.images[0].relativePath).toMatch(
      /^BreaKHis_v1\/histology_slides\/breast\/benign\/SOB\/adenosis\/SOB_B_A_\d\d-\d+[A-Z]*\/\d+X\/SOB_B_A-\d\d-\d+[A-Z]*-\d+-\d{3}\.png$/,
    );
  });

  it('covers all 8 subtypes and 4 magnifications with the requested patients', () => {
    expect(new Set(first.images.map((i) => i.subtype))).toEqual(new Set(BREAKHIS_SUBTYPES.map((s) => s.code)));
    expect(new Set(first.images.map((i) => i.magnification))).toEqual(new Set(BREAKHIS_MAGNIFICATIONS));
    expect(new Set(first.images.map((i) => i.patientId)).size).toBe(16);
    expect(new Set(first.images.map((i) => i.caseId)).size).toBe(16);
    for (const s of BREAKHIS_SUBTYPES) expect(first.images.filter((i) => i.subtype === s.code)).toHaveLength(8);
  });

  it('writes PNGs of the requested size', async () => {
    const meta = await sharp(first.images[0].path).metadata();
    expect([meta.width, meta.height, meta.channels]).toEqual([140, 92, 3]);
    await generateSyntheticBreakHis(path.join(tmp, 'small'), { patientsPerSubtype: 1, imagesPerPatient: 1, width: 50, height: 30 });
    const small = await readBreakHisTree(path.join(tmp, 'small'));
    expect(small.images).toHaveLength(8);
    const m2 = await sharp(small.images[0].path).metadata();
    expect([m2.width, m2.height]).toEqual([50, 30]);
  });

  it('is deterministic: the same seed gives byte-identical files, another seed different ones', async () => {
    await generateSyntheticBreakHis(path.join(tmp, 'b'), OPTS);
    await generateSyntheticBreakHis(path.join(tmp, 'c'), { ...OPTS, seed: 8 });
    const second = await readBreakHisTree(path.join(tmp, 'b'));
    const other = await readBreakHisTree(path.join(tmp, 'c'));
    expect(second.images.map((i) => i.relativePath)).toEqual(first.images.map((i) => i.relativePath));
    for (let k = 0; k < first.images.length; k++) {
      const [x, y] = await Promise.all([readFile(first.images[k].path), readFile(second.images[k].path)]);
      expect(x.equals(y)).toBe(true);
    }
    expect(other.images.map((i) => i.patientId)).not.toEqual(first.images.map((i) => i.patientId));
  });

  it('draws malignant tissue darker than benign on average, with overlap between images', async () => {
    const brightness = async (file: string): Promise<number> => {
      const { channels } = await sharp(file).stats();
      return (channels[0].mean + channels[1].mean + channels[2].mean) / 3;
    };
    const values = await Promise.all(first.images.map(async (i) => ({ label: i.label, b: await brightness(i.path) })));
    const of = (label: string): number[] => values.filter((v) => v.label === label).map((v) => v.b);
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const benign = of('benign');
    const malignant = of('malignant');
    expect(mean(benign) - mean(malignant)).toBeGreaterThan(3);
    // Not trivially separable by brightness alone.
    expect(Math.max(...malignant)).toBeGreaterThan(Math.min(...benign));
  });

  it('rejects invalid options', async () => {
    await expect(generateSyntheticBreakHis(path.join(tmp, 'bad'), { imagesPerPatient: 0 })).rejects.toThrow(/imagesPerPatient/);
    await expect(generateSyntheticBreakHis(path.join(tmp, 'bad'), { width: 2.5 })).rejects.toThrow(/width/);
  });
});
