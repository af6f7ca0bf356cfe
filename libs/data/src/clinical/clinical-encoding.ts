/**
 * The fixed-width vector a tabular encoder reads for one patient. Its layout depends on the run's
 * ClinicalSchema only (never on a site's data), so every site produces vectors of the same width
 * with the same meaning and scaling:
 *
 *   for each column, in schema order:
 *     numeric     -> 2 values:     [(x - min) / (max - min), missing]       x in [min, max] -> [0, 1]
 *     categorical -> L + 1 values: [one-hot over the L levels..., missing]
 *   then 1 value:  [no record]
 *
 * `missing` is 1 when the cell is empty (the column's other values are then 0) and 0 otherwise.
 * `no record` is 1 when the patient has no row in the table at all (or the site gave no table); every
 * other value is then 0. This is the "missing" path a fusion model learns instead of dropping the
 * patient.
 *
 * Example, schema [age numeric 20-90, receptor categorical negative/positive] (width 2 + 3 + 1 = 6):
 *   age 55, receptor positive  -> [0.5, 0,  0, 1, 0,  0]
 *   age empty, receptor empty  -> [0,   1,  0, 0, 1,  0]
 *   no row for the patient     -> [0,   0,  0, 0, 0,  1]
 */
import { ValidationError, clinicalWidth, type ClinicalSchema } from '@histofed/fl-core';
import type { ClinicalRecord, ClinicalTable } from './clinical-table';

/** Values per patient for `schema` (fl-core clinicalWidth: 2 per numeric column, levels + 1 per categorical one, plus 1). */
export { clinicalWidth };

/** One patient's vector (layout in the file header); `record` undefined = the patient has no row. */
export function encodeClinical(record: ClinicalRecord | undefined, schema: ClinicalSchema): Float32Array {
  const out = new Float32Array(clinicalWidth(schema));
  writeClinical(out, 0, record, schema);
  return out;
}

/**
 * The vectors of `patients`, back to back (`patients.length * clinicalWidth(schema)` values; row i
 * is patient i). A patient the table has no row for, and every patient when `table` is undefined (the
 * site gave none), gets the "no record" vector.
 */
export function encodeClinicalFor(
  patients: readonly string[],
  table: ClinicalTable | undefined,
  schema: ClinicalSchema,
): Float32Array {
  const width = clinicalWidth(schema);
  const out = new Float32Array(patients.length * width);
  patients.forEach((patient, i) => writeClinical(out, i * width, table?.records.get(patient), schema));
  return out;
}

function writeClinical(out: Float32Array, offset: number, record: ClinicalRecord | undefined, schema: ClinicalSchema): void {
  const width = clinicalWidth(schema);
  if (record === undefined) {
    out[offset + width - 1] = 1;
    return;
  }
  const { columns } = schema;
  if (record.values.length !== columns.length) {
    throw new ValidationError(
      `clinical record of patient ${record.patient} has ${record.values.length} values, the schema declares ${columns.length} columns`,
    );
  }
  let k = offset;
  columns.forEach((column, i) => {
    const v = record.values[i];
    if (column.type === 'numeric') {
      if (v === null) out[k + 1] = 1;
      else if (Number.isFinite(v) && v >= column.min && v <= column.max) out[k] = (v - column.min) / (column.max - column.min);
      else throw new ValidationError(`clinical record of patient ${record.patient}, column ${column.name}: ${v} is not in [${column.min}, ${column.max}]`);
      k += 2;
    } else {
      const levels = column.levels.length;
      if (v === null) out[k + levels] = 1;
      else if (Number.isInteger(v) && v >= 0 && v < levels) out[k + v] = 1;
      else throw new ValidationError(`clinical record of patient ${record.patient}, column ${column.name}: ${v} is not a level index below ${levels}`);
      k += levels + 1;
    }
  });
}
