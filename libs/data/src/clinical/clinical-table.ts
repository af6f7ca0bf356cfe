/**
 * A site's clinical table (`--clinical CSV`, issue 19): one row per patient, a `patient` column plus
 * exactly the columns the run's ClinicalSchema declares, in any order. Example for a schema with
 * `age` (numeric 18-100) and `receptor` (categorical negative/positive):
 *
 *     patient,receptor,age
 *     14-22549AB,negative,44
 *     "P,2",positive,          <- quoted id; empty age = missing
 *
 * Numeric cells are finite decimal numbers within the declared [min, max]; categorical cells are one
 * of the declared levels (exact match after trimming); an empty cell is a missing value. Every problem
 * is collected and reported at once (file, 1-based line, column, what was expected). The text read is
 * bounded (MAX_CLINICAL_CSV_CHARS, MAX_CLINICAL_ROWS). Nothing here looks at the values to derive
 * ranges or levels: those come from the schema only.
 */
import { readFile, stat } from 'node:fs/promises';
import {
  CLINICAL_PATIENT_COLUMN,
  ValidationError,
  validateClinicalSchema,
  type ClinicalColumn,
  type ClinicalSchema,
} from '@histofed/fl-core';
import { readCsvRecords } from './csv-records';

/** At most this many characters of CSV text are read (64 Mi; a file is checked in bytes). */
export const MAX_CLINICAL_CSV_CHARS = 64 * 1024 * 1024;
/** At most this many data rows (the header not counted). */
export const MAX_CLINICAL_ROWS = 1_000_000;
/** The error lists this many problems, then the count of the rest. */
export const MAX_CLINICAL_PROBLEMS_LISTED = 20;

/** One patient's row. */
export interface ClinicalRecord {
  readonly patient: string;
  /** 1-based line of the file the row starts on. */
  readonly line: number;
  /**
   * One value per schema column, in schema order: a numeric column's value as written (within
   * [min, max]), a categorical column's level index, or null when the cell is empty (missing).
   */
  readonly values: readonly (number | null)[];
}

export interface ClinicalTable {
  /** Records by patient id, in file order. */
  readonly records: ReadonlyMap<string, ClinicalRecord>;
  /** Data rows read (= records.size). */
  readonly rows: number;
}

const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;
const MISSING_SPELLINGS = /^(?:na|n\/a|nan|null|none|missing|unknown|-|\?)$/i;

/**
 * Parses and checks a clinical CSV against `schema` (validated first). `file` names the source in
 * messages. Throws one ValidationError listing up to 20 problems (then "... and N more") when
 * anything is wrong: header lacking `patient` or a declared column, a column not declared (a site
 * hands over nothing beyond the declaration), a column named twice, a row with the wrong number of
 * fields, an empty or repeated patient id, a numeric cell that is not a number or not in [min, max],
 * a categorical cell that is not a level. Throws at once for text beyond the size bounds and for an
 * unclosed quoted field.
 */
export function parseClinicalCsv(text: string, schema: ClinicalSchema, file: string): ClinicalTable {
  validateClinicalSchema(schema);
  if (text.length > MAX_CLINICAL_CSV_CHARS) {
    throw new ValidationError(
      `${file}: ${text.length} characters, more than the ${MAX_CLINICAL_CSV_CHARS} (64 MiB) a clinical table is read up to`,
    );
  }
  const records = readCsvRecords(text, file, MAX_CLINICAL_ROWS + 1);
  const problems = new ProblemList(file);
  const expected = [CLINICAL_PATIENT_COLUMN, ...schema.columns.map((c) => c.name)];
  if (records.length === 0) {
    throw new ValidationError(`${file}: empty; expected a header row with the columns ${expected.join(', ')} (any order)`);
  }

  // Header: where each declared column is, and nothing undeclared.
  const header = records[0];
  const names = header.cells.map((c) => c.trim());
  const position = new Map<string, number>();
  names.forEach((name, k) => {
    if (name === '') problems.add(header.line, null, `column ${k + 1} of the header has no name`);
    else if (position.has(name)) problems.add(header.line, name, `named twice in the header (columns ${position.get(name)! + 1} and ${k + 1})`);
    else position.set(name, k);
  });
  for (const name of expected) {
    if (position.has(name)) continue;
    const other = names.find((n) => n.toLowerCase() === name.toLowerCase());
    const what = name === CLINICAL_PATIENT_COLUMN ? 'the patient id column' : 'a declared column';
    problems.add(header.line, name, `${what}, not in the header${other ? ` (there is "${other}"; names are case-sensitive)` : ''}`);
  }
  for (const name of position.keys()) {
    if (!expected.includes(name)) {
      problems.add(header.line, name, `not a declared column; a site hands over only ${expected.join(', ')}`);
    }
  }
  problems.throwIfAny();

  const patientAt = position.get(CLINICAL_PATIENT_COLUMN)!;
  const columnAt = schema.columns.map((c) => position.get(c.name)!);
  const byPatient = new Map<string, ClinicalRecord>();
  const firstLine = new Map<string, number>(); // every patient id seen, valid row or not
  for (let r = 1; r < records.length; r++) {
    const { line, cells } = records[r];
    if (cells.length !== names.length) {
      problems.add(line, null, `expected ${names.length} fields as in the header, got ${cells.length}`);
      continue;
    }
    let ok = true;
    const patient = cells[patientAt].trim();
    if (patient === '') {
      problems.add(line, CLINICAL_PATIENT_COLUMN, 'empty; every row needs a patient id');
      ok = false;
    } else if (firstLine.has(patient)) {
      problems.add(line, CLINICAL_PATIENT_COLUMN, `${show(patient)} already has a row (line ${firstLine.get(patient)})`);
      ok = false;
    } else firstLine.set(patient, line);
    const values = schema.columns.map((column, i) => {
      const cell = cells[columnAt[i]].trim();
      if (cell === '') return null;
      const parsed = parseCell(cell, column);
      if (typeof parsed === 'string') {
        problems.add(line, column.name, parsed);
        ok = false;
        return null;
      }
      return parsed;
    });
    if (ok) byPatient.set(patient, { patient, line, values });
  }
  problems.throwIfAny();
  return { records: byPatient, rows: records.length - 1 };
}

/**
 * Reads `file` and parses it with parseClinicalCsv; a file larger than MAX_CLINICAL_CSV_CHARS bytes
 * is refused before it is read.
 */
export async function readClinicalCsv(file: string, schema: ClinicalSchema): Promise<ClinicalTable> {
  let text: string;
  try {
    const { size } = await stat(file);
    if (size > MAX_CLINICAL_CSV_CHARS) throw new Error(`${size} bytes, more than the ${MAX_CLINICAL_CSV_CHARS} (64 MiB) a clinical table is read up to`);
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new ValidationError(`clinical table ${file}: cannot read it: ${(e as Error).message}`);
  }
  return parseClinicalCsv(text, schema, file);
}

/** The cell's value (number or level index), or a message saying what was expected. */
function parseCell(cell: string, column: ClinicalColumn): number | string {
  if (column.type === 'numeric') {
    const range = `[${column.min}, ${column.max}]`;
    const x = DECIMAL.test(cell) ? Number(cell) : NaN;
    if (!Number.isFinite(x)) {
      const hint = MISSING_SPELLINGS.test(cell) ? ' (leave the cell empty for a missing value)' : '';
      return `${show(cell)} is not a number in ${range}${hint}`;
    }
    if (x < column.min || x > column.max) return `${show(cell)} is not in ${range}`;
    return x;
  }
  const index = column.levels.indexOf(cell);
  if (index >= 0) return index;
  const near = column.levels.find((l) => l.toLowerCase() === cell.toLowerCase());
  const hint = near
    ? ` (levels match exactly: "${near}")`
    : MISSING_SPELLINGS.test(cell)
      ? ' (leave the cell empty for a missing value)'
      : '';
  return `${show(cell)} is not one of the levels ${column.levels.map((l) => JSON.stringify(l)).join(', ')}${hint}`;
}

function show(value: string): string {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
}

/** The first MAX_CLINICAL_PROBLEMS_LISTED problem messages and the count of all. */
class ProblemList {
  private readonly listed: string[] = [];
  private count = 0;

  constructor(private readonly file: string) {}

  add(line: number, column: string | null, message: string): void {
    this.count++;
    if (this.listed.length < MAX_CLINICAL_PROBLEMS_LISTED) {
      this.listed.push(`${this.file} line ${line}${column === null ? '' : `, column ${column}`}: ${message}`);
    }
  }

  throwIfAny(): void {
    if (this.count === 0) return;
    const rest = this.count - this.listed.length;
    const lines = [
      `${this.file}: ${this.count} problem${this.count === 1 ? '' : 's'} in the clinical table:`,
      ...this.listed.map((p) => `  ${p}`),
      ...(rest > 0 ? [`  ... and ${rest} more`] : []),
    ];
    throw new ValidationError(lines.join('\n'));
  }
}
