import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ValidationError, type ClinicalSchema } from '@histofed/fl-core';
import { MAX_CLINICAL_CSV_CHARS, MAX_CLINICAL_ROWS, parseClinicalCsv, readClinicalCsv } from './clinical-table';

const SCHEMA: ClinicalSchema = {
  columns: [
    { name: 'age', type: 'numeric', min: 18, max: 100 },
    { name: 'size', type: 'numeric', min: 0.5, max: 80 },
    { name: 'receptor', type: 'categorical', levels: ['negative', 'positive'] },
  ],
};

/** The message parseClinicalCsv throws for `text`. */
function messageOf(text: string, schema: ClinicalSchema = SCHEMA): string {
  try {
    parseClinicalCsv(text, schema, 'clinical.csv');
  } catch (e) {
    expect(e).toBeInstanceOf(ValidationError);
    return (e as Error).message;
  }
  throw new Error('expected a ValidationError');
}

describe('parseClinicalCsv', () => {
  it('reads a good table: any column order, quoted fields, missing cells, CRLF, BOM, blank lines', () => {
    const text = [
      '\uFEFFreceptor, patient ,size,age',
      'negative,P1,12.5,44', // 2
      '"positive","P,2 ""b""",,61', // 3: quoted id with a comma and quotes; size missing
      '', // 4: blank
      ' positive ,P3, 0.5 ,', // 5: trimmed; age missing
      ',P4,80,100', // 6: receptor missing
      '"neg\native",P5,1,18', // 7-8: a quoted line break is not a level
    ].join('\r\n');
    expect(messageOf(text)).toBe(
      [
        'clinical.csv: 1 problem in the clinical table:',
        '  clinical.csv line 7, column receptor: "neg\\native" is not one of the levels "negative", "positive"',
      ].join('\n'),
    );
    const table = parseClinicalCsv(text.replace('"neg\native"', '"negative"'), SCHEMA, 'clinical.csv');
    expect(table.rows).toBe(5);
    expect([...table.records.keys()]).toEqual(['P1', 'P,2 "b"', 'P3', 'P4', 'P5']);
    expect(table.records.get('P1')).toEqual({ patient: 'P1', line: 2, values: [44, 12.5, 0] });
    expect(table.records.get('P,2 "b"')).toEqual({ patient: 'P,2 "b"', line: 3, values: [61, null, 1] });
    expect(table.records.get('P3')).toEqual({ patient: 'P3', line: 5, values: [null, 0.5, 1] });
    expect(table.records.get('P4')).toEqual({ patient: 'P4', line: 6, values: [100, 80, null] });
    expect(table.records.get('P5')?.values).toEqual([18, 1, 0]);
  });

  it('gives the line a record starts on after a quoted line break', () => {
    const table = parseClinicalCsv('patient,age,size,receptor\n"P\n1",20,1,negative\nP2,21,2,positive\n', SCHEMA, 'c.csv');
    expect(table.records.get('P\n1')?.line).toBe(2);
    expect(table.records.get('P2')?.line).toBe(4);
  });

  it('accepts a header-only table', () => {
    expect(parseClinicalCsv('patient,age,size,receptor\n', SCHEMA, 'c.csv')).toEqual({ records: new Map(), rows: 0 });
  });

  it('names the line and column of every bad value', () => {
    const text = [
      'patient,age,size,receptor',
      'P1,abc,10,negative', // 2
      'P2,120,10,negative', // 3
      'P3,40,0.1,negative', // 4
      'P4,40,10,maybe', // 5
      'P5,40,10,Positive', // 6
      'P1,40,10,negative', // 7
      ',40,10,negative', // 8
      'P6,NA,0x10,unknown', // 9
      'P7,40,10', // 10
      'P8,1e1,Infinity,negative', // 11
      'P9,50,10,negative', // 12: good
    ].join('\n');
    expect(messageOf(text).split('\n')).toEqual([
      'clinical.csv: 13 problems in the clinical table:',
      '  clinical.csv line 2, column age: "abc" is not a number in [18, 100]',
      '  clinical.csv line 3, column age: "120" is not in [18, 100]',
      '  clinical.csv line 4, column size: "0.1" is not in [0.5, 80]',
      '  clinical.csv line 5, column receptor: "maybe" is not one of the levels "negative", "positive"',
      '  clinical.csv line 6, column receptor: "Positive" is not one of the levels "negative", "positive" (levels match exactly: "positive")',
      '  clinical.csv line 7, column patient: "P1" already has a row (line 2)',
      '  clinical.csv line 8, column patient: empty; every row needs a patient id',
      '  clinical.csv line 9, column age: "NA" is not a number in [18, 100] (leave the cell empty for a missing value)',
      '  clinical.csv line 9, column size: "0x10" is not a number in [0.5, 80]',
      '  clinical.csv line 9, column receptor: "unknown" is not one of the levels "negative", "positive" (leave the cell empty for a missing value)',
      '  clinical.csv line 10: expected 4 fields as in the header, got 3',
      '  clinical.csv line 11, column age: "1e1" is not in [18, 100]',
      '  clinical.csv line 11, column size: "Infinity" is not a number in [0.5, 80]',
    ]);
  });

  it('names missing, undeclared, repeated and unnamed header columns', () => {
    expect(messageOf('receptor,Age,weight,patient,weight,\nP1,40,70,negative,70,\n').split('\n')).toEqual([
      'clinical.csv: 6 problems in the clinical table:',
      '  clinical.csv line 1, column weight: named twice in the header (columns 3 and 5)',
      '  clinical.csv line 1: column 6 of the header has no name',
      '  clinical.csv line 1, column age: a declared column, not in the header (there is "Age"; names are case-sensitive)',
      '  clinical.csv line 1, column size: a declared column, not in the header',
      '  clinical.csv line 1, column Age: not a declared column; a site hands over only patient, age, size, receptor',
      '  clinical.csv line 1, column weight: not a declared column; a site hands over only patient, age, size, receptor',
    ]);
    expect(messageOf('id,age,size,receptor\nP1,40,10,negative\n').split('\n')).toEqual([
      'clinical.csv: 2 problems in the clinical table:',
      '  clinical.csv line 1, column patient: the patient id column, not in the header',
      '  clinical.csv line 1, column id: not a declared column; a site hands over only patient, age, size, receptor',
    ]);
  });

  it('lists 20 problems and counts the rest', () => {
    const rows = Array.from({ length: 25 }, (_, i) => `P${i},${200 + i},10,negative`);
    const lines = messageOf(['patient,age,size,receptor', ...rows].join('\n')).split('\n');
    expect(lines[0]).toBe('clinical.csv: 25 problems in the clinical table:');
    expect(lines).toHaveLength(1 + 20 + 1);
    expect(lines[1]).toBe('  clinical.csv line 2, column age: "200" is not in [18, 100]');
    expect(lines[20]).toBe('  clinical.csv line 21, column age: "219" is not in [18, 100]');
    expect(lines[21]).toBe('  ... and 5 more');
  });

  it('refuses an empty text, an unclosed quote, a bad schema and text beyond the bounds', () => {
    expect(messageOf('')).toBe('clinical.csv: empty; expected a header row with the columns patient, age, size, receptor (any order)');
    expect(messageOf('\n\n')).toMatch(/^clinical\.csv: empty;/);
    expect(messageOf('patient,age,size,receptor\nP1,40,10,negative\n"P2,40,10,negative\n')).toBe(
      'clinical.csv line 3: a quoted field is not closed',
    );
    expect(messageOf('patient\n', { columns: [] })).toBe('clinical.columns: expected 1 to 64 columns, got 0');
    expect(messageOf(' '.repeat(MAX_CLINICAL_CSV_CHARS + 1))).toBe(
      `clinical.csv: ${MAX_CLINICAL_CSV_CHARS + 1} characters, more than the ${MAX_CLINICAL_CSV_CHARS} (64 MiB) a clinical table is read up to`,
    );
    const tooMany = `patient,age\n${'x,1\n'.repeat(MAX_CLINICAL_ROWS + 1)}`;
    expect(messageOf(tooMany, { columns: [{ name: 'age', type: 'numeric', min: 0, max: 1 }] })).toBe(
      `clinical.csv: more than ${MAX_CLINICAL_ROWS} data rows (line ${MAX_CLINICAL_ROWS + 2}); a clinical table is read up to that many`,
    );
  });

  it('reads a file and names it', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'clinical-'));
    try {
      const file = path.join(dir, 'clinical.csv');
      await writeFile(file, 'patient,age,size,receptor\nP1,40,,positive\nP2,x,1,negative\n');
      await expect(readClinicalCsv(file, SCHEMA)).rejects.toThrow(`${file} line 3, column age: "x" is not a number in [18, 100]`);
      await writeFile(file, 'patient,age,size,receptor\nP1,40,,positive\n');
      expect((await readClinicalCsv(file, SCHEMA)).records.get('P1')?.values).toEqual([40, null, 1]);
      await expect(readClinicalCsv(path.join(dir, 'none.csv'), SCHEMA)).rejects.toThrow(/^clinical table .*none\.csv: cannot read it/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
