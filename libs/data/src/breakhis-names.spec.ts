import { BREAKHIS_SUBTYPE_CODES, BREAKHIS_SUBTYPE_PARENTS, STAGE1_CLASSES } from '@histofed/fl-core';
import {
  BREAKHIS_SUBTYPES,
  breakHisCaseId,
  breakHisRelativePath,
  breakHisSubtypeByCode,
  breakHisSubtypeByDirName,
  parseBreakHisFileName,
  parseBreakHisSlideFolder,
} from './breakhis-names';

describe('BreakHis subtype table', () => {
  it('has the 8 subtypes with their folders, labels and label indices', () => {
    expect(BREAKHIS_SUBTYPES.map((s) => `${s.code}:${s.dirName}:${s.label}:${s.labelIndex}`)).toEqual([
      'A:adenosis:benign:0',
      'F:fibroadenoma:benign:0',
      'PT:phyllodes_tumor:benign:0',
      'TA:tubular_adenoma:benign:0',
      'DC:ductal_carcinoma:malignant:1',
      'LC:lobular_carcinoma:malignant:1',
      'MC:mucinous_carcinoma:malignant:1',
      'PC:papillary_carcinoma:malignant:1',
    ]);
    for (const s of BREAKHIS_SUBTYPES) expect(STAGE1_CLASSES[s.labelIndex]).toBe(s.label);
    // The stage-2 label order shared with libs/ml and the protocol is this table's order.
    expect(BREAKHIS_SUBTYPES.map((s) => s.code)).toEqual([...BREAKHIS_SUBTYPE_CODES]);
    expect(BREAKHIS_SUBTYPES.map((s) => s.labelIndex)).toEqual([...BREAKHIS_SUBTYPE_PARENTS]);
    expect(breakHisSubtypeByCode('PT')?.dirName).toBe('phyllodes_tumor');
    expect(breakHisSubtypeByDirName('mucinous_carcinoma')?.code).toBe('MC');
    expect(breakHisSubtypeByCode('XX')).toBeUndefined();
  });
});

describe('parseBreakHisFileName', () => {
  it('parses a benign name whose slide code has letters, case = digits only', () => {
    expect(parseBreakHisFileName('SOB_B_A-14-22549AB-40-001.png')).toEqual({
      label: 'benign',
      subtype: 'A',
      patientId: '14-22549AB',
      caseId: '14-22549',
      magnification: 40,
      sequence: 1,
    });
  });

  it('parses malignant names, two-letter subtypes, other years and all magnifications', () => {
    expect(parseBreakHisFileName('SOB_M_DC-14-2980-400-013.png')).toMatchObject({
      label: 'malignant',
      subtype: 'DC',
      patientId: '14-2980',
      caseId: '14-2980',
      magnification: 400,
      sequence: 13,
    });
    expect(parseBreakHisFileName('SOB_M_PC-15-190EF-200-004.png')).toMatchObject({ patientId: '15-190EF', caseId: '15-190' });
    expect(parseBreakHisFileName('SOB_B_PT-14-22704-100-002.png')?.subtype).toBe('PT');
    expect(parseBreakHisFileName('SOB_B_TA-14-16184CD-100-002.png')?.caseId).toBe('14-16184');
  });

  it('maps slide codes that share a case to one caseId', () => {
    const cases = ['14-22549AB', '14-22549CD', '14-22549G'].map((p) => parseBreakHisFileName(`SOB_B_A-${p}-100-001.png`)?.caseId);
    expect(cases).toEqual(['14-22549', '14-22549', '14-22549']);
    expect(breakHisCaseId('14-19979C')).toBe('14-19979');
  });

  it('ignores directories in front of the name', () => {
    expect(parseBreakHisFileName('/data/x/SOB_B_F-14-9133-40-001.png')?.patientId).toBe('14-9133');
  });

  it.each([
    ['photo.png'],
    ['SOB_B_A-14-22549AB-40-001.jpg'],
    ['SOB_B_A_14-22549AB'],
    ['SOB_X_A-14-22549AB-40-001.png'], // no such label letter
    ['SOB_B_DC-14-2980-40-001.png'], // DC is malignant, not B
    ['SOB_M_A-14-22549AB-40-001.png'], // A is benign, not M
    ['SOB_B_ZZ-14-22549AB-40-001.png'], // unknown subtype
    ['SOB_B_A-14-22549AB-50-001.png'], // no 50X magnification
    ['SOB_B_A-14-22549AB-40-000.png'], // sequence starts at 1
    ['SOB_B_A-14-22549AB-40.png'],
    ['sob_b_a-14-22549ab-40-001.png'],
    ['SOB_B_A-14-22549AB-40-001.png.bak'],
    ['._SOB_B_A-14-22549AB-40-001.png'],
  ])('rejects %s', (name) => {
    expect(parseBreakHisFileName(name)).toBeNull();
  });
});

describe('slide folders and path building', () => {
  it('parses slide folders and rejects others', () => {
    expect(parseBreakHisSlideFolder('SOB_B_A_14-22549AB')).toEqual({ label: 'benign', subtype: 'A', patientId: '14-22549AB' });
    expect(parseBreakHisSlideFolder('SOB_B_DC_14-2980')).toBeNull();
    expect(parseBreakHisSlideFolder('40X')).toBeNull();
  });

  it('builds the exact BreakHis relative path, which parses back', () => {
    const rel = breakHisRelativePath({ subtype: 'A', patientId: '14-22549AB', magnification: 40, sequence: 1 });
    expect(rel).toBe('BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png');
    expect(parseBreakHisFileName(rel)).toMatchObject({ subtype: 'A', patientId: '14-22549AB', magnification: 40, sequence: 1 });
  });
});
