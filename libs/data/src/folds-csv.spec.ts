import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { readBreakHisTree, type BreakHisDataset } from './breakhis-reader';
import { DataError } from './data-error';
import { FOLDS_CSV_COLUMNS, matchFold, parseFoldsCsv, readFoldsCsv } from './folds-csv';
import { REAL_SAMPLE_ROOT } from './test-paths';

const DIR = 'BreaKHis_v1/histology_slides/breast';
const A1 = `${DIR}/benign/SOB/adenosis/SOB_B_A_14-22549AB/100X/SOB_B_A-14-22549AB-100-001.png`;
const A2 = `${DIR}/benign/SOB/adenosis/SOB_B_A_14-22549CD/100X/SOB_B_A-14-22549CD-100-001.png`;
const DC = `${DIR}/malignant/SOB/ductal_carcinoma/SOB_M_DC_14-12312/100X/SOB_M_DC-14-12312-100-041.png`;
const PC = `${DIR}/malignant/SOB/papillary_carcinoma/SOB_M_PC_15-190EF/400X/SOB_M_PC-15-190EF-400-014.png`;
const MISSING = `${DIR}/benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-999.png`;

const CSV = [
  'fold,mag,grp,filename',
  `1,100,train,${A1}`, // 2
  `1,100,test,${A2}`, // 3
  `1,100,test,${DC}`, // 4
  `1,400,train,${PC}`, // 5
  `1,40,train,${MISSING}`, // 6: not in the sample
  `2,100,test,${A1}`, // 7: other fold
  'x,100,train,foo.png', // 8
  `1,50,train,${A1}`, // 9
  `1,100,val,${A1}`, // 10
  '1,100,train,not-breakhis.png', // 11
  '1,100,train', // 12
  `1,40,train,${A1}`, // 13: mag disagrees with the name
  `1,100,train,${A1}`, // 14: duplicate
  '', // 15: blank
  `"1",100,train,"${DC.replace('-041', '-001')}"`, // 16: quoted, not in the sample
].join('\r\n');

describe('Folds.csv', () => {
  let dataset: BreakHisDataset;
  let tmp: string;
  beforeAll(async () => {
    dataset = await readBreakHisTree(REAL_SAMPLE_ROOT);
    tmp = await mkdtemp(path.join(tmpdir(), 'histofed-folds-'));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('parses one fold, reporting malformed rows with line numbers and reasons', () => {
    const parsed = parseFoldsCsv(CSV, { fold: 1 });
    expect(parsed.folds).toEqual([1, 2]);
    expect(parsed.entries.map((e) => e.line)).toEqual([2, 3, 4, 5, 6, 16]);
    expect(parsed.entries[0]).toEqual({ line: 2, fold: 1, magnification: 100, group: 'train', filename: A1, fileName: 'SOB_B_A-14-22549AB-100-001.png' });
    const reasons = Object.fromEntries(parsed.problems.map((p) => [p.line, p.reason]));
    expect(Object.keys(reasons).map(Number)).toEqual([8, 9, 10, 11, 12, 13, 14]);
    expect(reasons[8]).toMatch(/fold "x" is not a positive integer/);
    expect(reasons[9]).toMatch(/mag "50"/);
    expect(reasons[10]).toMatch(/grp "val"/);
    expect(reasons[11]).toMatch(/not a BreakHis file name/);
    expect(reasons[12]).toMatch(/expected 4 fields/);
    expect(reasons[13]).toMatch(/mag 40 disagrees/);
    expect(reasons[14]).toMatch(/listed again in fold 1 \(first on line 2\)/);
    expect(parsed.problems.find((p) => p.line === 9)?.filename).toBe(A1);
    expect(parseFoldsCsv(CSV).entries).toHaveLength(7);
  });

  it('matches a fold to the real sample by file name; missing files are listed, not thrown', async () => {
    const file = path.join(tmp, 'Folds.csv');
    await writeFile(file, CSV);
    const fold = await readFoldsCsv(file, dataset, 1);
    expect(fold.fold).toBe(1);
    expect(fold.train.map((i) => i.relativePath)).toEqual([A1, PC]);
    expect(fold.test.map((i) => i.relativePath)).toEqual([A2, DC]);
    expect(fold.missing.map((m) => m.line)).toEqual([6, 16]);
    expect(fold.missing[0].reason).toMatch(/no image named SOB_B_A-14-22549AB-40-999.png/);
    expect(fold.problems).toHaveLength(7);
    expect(fold.unlisted).toHaveLength(dataset.images.length - 4);
    // 22549AB (train) and 22549CD (test) are one case: reported.
    expect(fold.casesOnBothSides).toEqual(['14-22549']);
    const fold2 = matchFold(parseFoldsCsv(CSV), dataset, 2);
    expect(fold2.test.map((i) => i.relativePath)).toEqual([A1]);
    expect(fold2.train).toEqual([]);
    expect(fold2.casesOnBothSides).toEqual([]);
  });

  it('a wrong header names the expected columns; an unreadable file is a DataError', async () => {
    expect(() => parseFoldsCsv('fold,magnification,group,file\n1,100,train,x.png')).toThrow(DataError);
    expect(() => parseFoldsCsv('path,label\n')).toThrow(/fold,mag,grp,filename/);
    expect(() => parseFoldsCsv('')).toThrow(DataError);
    expect(parseFoldsCsv('\uFEFFfold,mag,grp,filename\n').entries).toEqual([]);
    expect(FOLDS_CSV_COLUMNS).toEqual(['fold', 'mag', 'grp', 'filename']);
    await expect(readFoldsCsv(path.join(tmp, 'nope.csv'), dataset, 1)).rejects.toThrow(DataError);
    expect(() => parseFoldsCsv(CSV, { fold: 0 })).toThrow(ValidationError);
  });
});
