import type { ClinicalSchema, LabeledImages } from '@histofed/fl-core';
import { clinicalWidth, encodeClinical } from './clinical-encoding';
import { withClinical } from './clinical-rows';
import { parseClinicalCsv } from './clinical-table';

const schema: ClinicalSchema = { columns: [{ name: 'age', type: 'numeric', min: 20, max: 90 }, { name: 'receptor', type: 'categorical', levels: ['negative', 'positive'] }] };

describe('withClinical', () => {
  it("appends each row's patient record, and the no-record path for a patient without one", () => {
    const table = parseClinicalCsv('patient,age,receptor\nP1,55,positive\n', schema, 'clinical.csv');
    const rows: LabeledImages = { images: Float32Array.from([1, 2, 3, 4, 5, 6]), labels: Int32Array.from([0, 0, 1]), count: 3, imageSize: 32, sampleShape: [2], groups: ['P1', 'P1', 'P2'] };
    const out = withClinical(rows, table, schema);
    const c = clinicalWidth(schema);
    expect(out.sampleShape).toEqual([2 + c]);
    const row = (r: number) => Array.from(out.images.subarray(r * (2 + c), (r + 1) * (2 + c)));
    expect(row(0)).toEqual([1, 2, ...encodeClinical(table.records.get('P1'), schema)]);
    expect(row(1).slice(0, 2)).toEqual([3, 4]);
    expect(row(2)).toEqual([5, 6, ...encodeClinical(undefined, schema)]);
    expect(row(2)[2 + c - 1]).toBe(1);
    expect(Array.from(withClinical(rows, undefined, schema).images.subarray(2 + c, 2 * (2 + c)))).toEqual([3, 4, ...encodeClinical(undefined, schema)]);
  });

  it('refuses pixel rows and rows without patients', () => {
    const rows: LabeledImages = { images: new Float32Array(12), labels: new Int32Array(1), count: 1, imageSize: 2 };
    expect(() => withClinical(rows, undefined, schema)).toThrow(/feature vectors/);
    expect(() => withClinical({ ...rows, images: new Float32Array(2), sampleShape: [2] }, undefined, schema)).toThrow(/groups/);
  });
});
