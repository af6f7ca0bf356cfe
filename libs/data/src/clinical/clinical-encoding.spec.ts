import { ValidationError, type ClinicalSchema } from '@histofed/fl-core';
import { clinicalWidth, encodeClinical, encodeClinicalFor } from './clinical-encoding';
import { parseClinicalCsv, type ClinicalRecord } from './clinical-table';

const SCHEMA: ClinicalSchema = {
  columns: [
    { name: 'age', type: 'numeric', min: 20, max: 90 },
    { name: 'receptor', type: 'categorical', levels: ['negative', 'positive'] },
    { name: 'birads', type: 'categorical', levels: ['2', '3', '4', '5'] },
    { name: 'size', type: 'numeric', min: -10, max: 10 },
  ],
};
const record = (values: (number | null)[], patient = 'P1'): ClinicalRecord => ({ patient, line: 2, values });

describe('clinical encoding', () => {
  it('has a width fixed by the schema: 2 per numeric, levels + 1 per categorical, plus 1', () => {
    expect(clinicalWidth(SCHEMA)).toBe(2 + 3 + 5 + 2 + 1);
    expect(clinicalWidth({ columns: [{ name: 'a', type: 'numeric', min: 0, max: 1 }] })).toBe(3);
  });

  it('encodes a full record', () => {
    expect([...encodeClinical(record([55, 1, 2, 5]), SCHEMA)]).toEqual([0.5, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0.75, 0, 0]);
    expect([...encodeClinical(record([20, 0, 0, -10]), SCHEMA)]).toEqual([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    expect([...encodeClinical(record([90, 0, 3, 10]), SCHEMA)]).toEqual([1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
    const x = encodeClinical(record([41, 1, 1, 2.5]), SCHEMA);
    expect(x).toBeInstanceOf(Float32Array);
    expect(x[0]).toBeCloseTo(0.3, 6);
    expect(x[10]).toBeCloseTo(0.625, 6);
  });

  it('flags missing cells and leaves their other values 0', () => {
    expect([...encodeClinical(record([null, 1, null, 0]), SCHEMA)]).toEqual([0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0.5, 0, 0]);
    expect([...encodeClinical(record([null, null, null, null]), SCHEMA)]).toEqual([0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0]);
  });

  it('gives a patient without a record only the final flag', () => {
    expect([...encodeClinical(undefined, SCHEMA)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  });

  it('lays patients back to back, absent ones and a missing table on the missing path', () => {
    const table = parseClinicalCsv('patient,size,birads,receptor,age\nA,0,5,positive,55\nB,,,,\n', SCHEMA, 'c.csv');
    const rows = encodeClinicalFor(['B', 'nobody', 'A'], table, SCHEMA);
    const w = clinicalWidth(SCHEMA);
    expect(rows).toHaveLength(3 * w);
    expect([...rows.subarray(0, w)]).toEqual([...encodeClinical(record([null, null, null, null]), SCHEMA)]);
    expect([...rows.subarray(w, 2 * w)]).toEqual([...encodeClinical(undefined, SCHEMA)]);
    expect([...rows.subarray(2 * w)]).toEqual([0.5, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0.5, 0, 0]);
    const none = encodeClinicalFor(['A', 'B'], undefined, SCHEMA);
    expect([...none]).toEqual([...encodeClinical(undefined, SCHEMA), ...encodeClinical(undefined, SCHEMA)]);
    expect(encodeClinicalFor([], table, SCHEMA)).toHaveLength(0);
  });

  it('refuses a record that does not fit the schema', () => {
    expect(() => encodeClinical(record([55, 1, 2]), SCHEMA)).toThrow(ValidationError);
    expect(() => encodeClinical(record([55, 1, 2]), SCHEMA)).toThrow('clinical record of patient P1 has 3 values, the schema declares 4 columns');
    expect(() => encodeClinical(record([95, 1, 2, 0]), SCHEMA)).toThrow('clinical record of patient P1, column age: 95 is not in [20, 90]');
    expect(() => encodeClinical(record([55, 2, 2, 0]), SCHEMA)).toThrow('clinical record of patient P1, column receptor: 2 is not a level index below 2');
    expect(() => encodeClinical(record([55, 0.5, 2, 0]), SCHEMA)).toThrow(/column receptor: 0\.5 is not a level index/);
  });
});
