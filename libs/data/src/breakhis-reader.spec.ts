import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { HistoFedError } from '@histofed/fl-core';
import { breakHisFileName, breakHisRelativePath } from './breakhis-names';
import { assertHasImages, readBreakHisTree, type BreakHisDataset } from './breakhis-reader';
import { DataError } from './data-error';
import { generateSyntheticBreakHis } from './synthetic-breakhis';
import { REAL_SAMPLE_ROOT } from './test-paths';

describe('readBreakHisTree on the real BreakHis sample', () => {
  let real: BreakHisDataset;
  beforeAll(async () => {
    real = await readBreakHisTree(REAL_SAMPLE_ROOT);
  });

  it('finds 213 images, 37 patients, 8 subtypes, 4 magnifications and no problems', () => {
    expect(real.problems).toEqual([]);
    expect(real.images).toHaveLength(213);
    expect(new Set(real.images.map((i) => i.patientId)).size).toBe(37);
    expect(new Set(real.images.map((i) => i.subtype)).size).toBe(8);
    expect(new Set(real.images.map((i) => i.magnification))).toEqual(new Set([40, 100, 200, 400]));
    expect(real.root).toBe(REAL_SAMPLE_ROOT);
  });

  it('agrees with files.csv image by image', async () => {
    const csv = (await readFile(path.join(REAL_SAMPLE_ROOT, 'files.csv'), 'utf8')).trim().split('\n');
    const header = csv[0].split(',');
    const col = (name: string): number => header.indexOf(name);
    const rows = csv.slice(1).map((line) => line.split(','));
    const expected = rows
      .map((r) => `${r[col('path')]}|${r[col('label')]}|${r[col('subtype')]}|${r[col('patient_id')]}|${r[col('magnification')]}`)
      .sort();
    const actual = real.images.map((i) => `${i.relativePath}|${i.label}|${i.subtype}|${i.patientId}|${i.magnification}X`);
    expect(actual).toEqual(expected); // also checks the relativePath sort order
  });

  it('fills every field and groups 22549AB/CD/G into one case', () => {
    const img = real.images.find((i) => i.relativePath.endsWith('SOB_B_A-14-22549AB-100-001.png'));
    expect(img).toEqual({
      path: path.join(REAL_SAMPLE_ROOT, img?.relativePath ?? ''),
      relativePath: 'BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-22549AB/100X/SOB_B_A-14-22549AB-100-001.png',
      label: 'benign',
      labelIndex: 0,
      subtype: 'A',
      patientId: '14-22549AB',
      caseId: '14-22549',
      magnification: 100,
      sequence: 1,
    });
    const slides = new Set(real.images.filter((i) => i.caseId === '14-22549').map((i) => i.patientId));
    expect(slides).toEqual(new Set(['14-22549AB', '14-22549CD', '14-22549G']));
    expect(real.images.filter((i) => i.label === 'malignant').every((i) => i.labelIndex === 1)).toBe(true);
  });

  it('accepts a root inside the tree and still checks the folders above it', async () => {
    const slide = path.join(REAL_SAMPLE_ROOT, 'BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-22549AB');
    const part = await readBreakHisTree(slide);
    expect(part.problems).toEqual([]);
    expect(part.images).toHaveLength(15);
    expect(part.images[0].relativePath).toBe('100X/SOB_B_A-14-22549AB-100-001.png');
  });
});

describe('readBreakHisTree on damaged trees', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-reader-'));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('uses the good images and lists each bad file with its reason', async () => {
    const root = path.join(tmp, 'damaged');
    await generateSyntheticBreakHis(root, { patientsPerSubtype: 1, imagesPerPatient: 2, width: 32, height: 24, seed: 3 });
    const clean = await readBreakHisTree(root);
    expect(clean.problems).toEqual([]);
    expect(clean.images).toHaveLength(16);

    const [victim, source] = clean.images;
    // 1. truncated PNG (header intact, end missing)
    const bytes = await readFile(victim.path);
    await writeFile(victim.path, bytes.subarray(0, Math.floor(bytes.length / 2)));
    // 2. a name that disagrees with its folders: a malignant DC name inside a benign adenosis 40X folder
    const wrongFolder = path.join(path.dirname(source.path), 'SOB_M_DC-14-2980-40-001.png');
    await copyFile(source.path, wrongFolder);
    // 3. a name that is not a BreakHis name at all
    const foreign = path.join(path.dirname(source.path), 'scan_0001.png');
    await copyFile(source.path, foreign);
    // 4. the same file name again in a second place
    const dupDir = path.join(root, 'copy', path.dirname(breakHisRelativePath(source)));
    await mkdir(dupDir, { recursive: true });
    const duplicate = path.join(dupDir, path.basename(source.path));
    await copyFile(source.path, duplicate);
    // 5. a file with a PNG name that is not a PNG
    const third = clean.images[2];
    const garbage = path.join(path.dirname(third.path), breakHisFileName({ ...third, sequence: 99 }));
    await writeFile(garbage, 'this is not an image, just text padded out to some length........');
    // other files are ignored
    await writeFile(path.join(root, 'notes.txt'), 'hello');

    const ds = await readBreakHisTree(root);
    expect(ds.images).toHaveLength(15);
    expect(ds.images.map((i) => i.path)).not.toContain(victim.path);
    expect(ds.images.map((i) => i.path)).toContain(source.path);
    const reasonOf = (file: string): string | undefined => ds.problems.find((p) => p.path === file)?.reason;
    expect(ds.problems).toHaveLength(5);
    expect(reasonOf(victim.path)).toMatch(/truncated/);
    expect(reasonOf(wrongFolder)).toMatch(/disagrees with its folders/);
    expect(reasonOf(wrongFolder)).toMatch(/"adenosis" but the name implies "ductal_carcinoma"/);
    expect(reasonOf(wrongFolder)).toMatch(/label folder is "benign" but the name implies "malignant"/);
    expect(reasonOf(foreign)).toMatch(/not a BreakHis name/);
    expect(reasonOf(duplicate)).toMatch(/duplicate file name; first seen at BreaKHis_v1\//);
    expect(reasonOf(garbage)).toBe('not a PNG (bad signature)');
  });

  it('reports a file in the wrong magnification folder', async () => {
    const root = path.join(tmp, 'wrongmag');
    await generateSyntheticBreakHis(root, { patientsPerSubtype: 1, imagesPerPatient: 1, width: 16, height: 16 });
    const ds0 = await readBreakHisTree(root);
    const img = ds0.images[0];
    const otherMag = img.magnification === 40 ? 100 : 40;
    const moved = path.join(path.dirname(path.dirname(img.path)), `${otherMag}X`, path.basename(img.path));
    await mkdir(path.dirname(moved), { recursive: true });
    await copyFile(img.path, moved);
    await rm(img.path);
    const ds = await readBreakHisTree(root);
    expect(ds.images).toHaveLength(7);
    expect(ds.problems).toEqual([
      { path: moved, reason: expect.stringContaining(`magnification folder is "${otherMag}X" but the name implies "${img.magnification}X"`) },
    ]);
  });

  it('returns an empty dataset for a folder without usable images; assertHasImages throws', async () => {
    const empty = path.join(tmp, 'empty');
    await mkdir(empty);
    await writeFile(path.join(empty, 'x.png'), 'nope');
    const ds = await readBreakHisTree(empty);
    expect(ds.images).toEqual([]);
    expect(ds.problems).toHaveLength(1);
    expect(() => assertHasImages(ds)).toThrow(DataError);
    expect(() => assertHasImages(ds)).toThrow(new RegExp(`No usable BreakHis images in ${escape(empty)} \\(1 problem`));
  });

  it('throws DataError naming the folder when the root is missing or a file', async () => {
    const missing = path.join(tmp, 'does-not-exist');
    await expect(readBreakHisTree(missing)).rejects.toThrow(DataError);
    await expect(readBreakHisTree(missing)).rejects.toThrow(missing);
    const file = path.join(tmp, 'a-file');
    await writeFile(file, 'x');
    const err = await readBreakHisTree(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HistoFedError);
    expect((err as DataError).code).toBe('DATA');
    expect((err as Error).message).toContain(`${file} is not a folder`);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
