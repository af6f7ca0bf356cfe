/**
 * The clinical table a site may give next to its images (issue 19, multi-modal fusion): a patient id
 * plus typed columns that the run config declares. The declaration alone fixes everything that
 * depends on the columns (the encoding's width, each numeric column's scaling, each categorical
 * column's one-hot layout), so nothing a site derives from its own data can change what leaves it.
 */
import { ValidationError } from './errors';

/** A numeric column: values in [min, max] (inclusive), scaled to [0, 1] by the declared range. */
export interface NumericClinicalColumn {
  readonly name: string;
  readonly type: 'numeric';
  readonly min: number;
  readonly max: number;
}

/** A categorical column: one of `levels` (matched exactly after trimming the cell). */
export interface CategoricalClinicalColumn {
  readonly name: string;
  readonly type: 'categorical';
  readonly levels: readonly string[];
}

export type ClinicalColumn = NumericClinicalColumn | CategoricalClinicalColumn;

/** The declared columns, in the order the encoding lays them out. */
export interface ClinicalSchema {
  readonly columns: readonly ClinicalColumn[];
}

/**
 * Values of one patient's encoded record for `schema` (libs/data encodeClinical lays them out):
 * 2 per numeric column (value, missing), levels + 1 per categorical one (one-hot, missing), plus 1
 * (no record). The width of a fusion model's clinical input follows from the declaration alone.
 */
export function clinicalWidth(schema: ClinicalSchema): number {
  let width = 1;
  for (const c of schema.columns) width += c.type === 'numeric' ? 2 : c.levels.length + 1;
  return width;
}

/** The column holding the patient id in every clinical table; no declared column may use the name. */
export const CLINICAL_PATIENT_COLUMN = 'patient';
export const CLINICAL_MAX_COLUMNS = 64;
export const CLINICAL_MIN_LEVELS = 2;
export const CLINICAL_MAX_LEVELS = 64;
export const CLINICAL_MAX_NAME_LENGTH = 64;
const COLUMN_NAME = /^[a-zA-Z][a-zA-Z0-9_]*$/;

/**
 * Checks a clinical declaration (e.g. parsed from a run config's JSON) and throws a ValidationError
 * naming the first bad field, e.g. `clinical.columns[2].levels: ...`: 1-64 columns; names unique,
 * matching [a-zA-Z][a-zA-Z0-9_]* (at most 64 characters) and not `patient` (in any case); numeric
 * columns with finite min < max; categorical columns with 2-64 distinct, non-empty levels without
 * leading or trailing blanks (cells are trimmed before matching, so such a level could never match).
 */
export function validateClinicalSchema(schema: unknown, what = 'clinical'): asserts schema is ClinicalSchema {
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
    throw new ValidationError(`${what}: expected an object with "columns", got ${describe(schema)}`);
  }
  const columns = (schema as { columns?: unknown }).columns;
  if (!Array.isArray(columns)) throw new ValidationError(`${what}.columns: expected an array of columns, got ${describe(columns)}`);
  if (columns.length < 1 || columns.length > CLINICAL_MAX_COLUMNS) {
    throw new ValidationError(`${what}.columns: expected 1 to ${CLINICAL_MAX_COLUMNS} columns, got ${columns.length}`);
  }
  const seen = new Map<string, number>();
  columns.forEach((column: unknown, i) => {
    const at = `${what}.columns[${i}]`;
    if (typeof column !== 'object' || column === null || Array.isArray(column)) {
      throw new ValidationError(`${at}: expected a column object, got ${describe(column)}`);
    }
    const c = column as Record<string, unknown>;
    const name = c.name;
    if (typeof name !== 'string' || name === '') throw new ValidationError(`${at}.name: expected a non-empty string, got ${describe(name)}`);
    if (!COLUMN_NAME.test(name) || name.length > CLINICAL_MAX_NAME_LENGTH) {
      throw new ValidationError(
        `${at}.name: "${name}" must start with a letter and hold only letters, digits and _ (at most ${CLINICAL_MAX_NAME_LENGTH} characters)`,
      );
    }
    if (name.toLowerCase() === CLINICAL_PATIENT_COLUMN) {
      throw new ValidationError(`${at}.name: "${name}" is reserved for the patient id column`);
    }
    const first = seen.get(name);
    if (first !== undefined) throw new ValidationError(`${at}.name: "${name}" is already the name of columns[${first}]`);
    seen.set(name, i);
    if (c.type === 'numeric') {
      for (const key of ['min', 'max'] as const) {
        const v = c[key];
        if (typeof v !== 'number' || !Number.isFinite(v)) throw new ValidationError(`${at}.${key}: expected a finite number, got ${describe(v)}`);
      }
      if (!((c.min as number) < (c.max as number))) {
        throw new ValidationError(`${at}.max: must be greater than min (${c.min as number}), got ${c.max as number}`);
      }
    } else if (c.type === 'categorical') {
      const levels = c.levels;
      if (!Array.isArray(levels)) throw new ValidationError(`${at}.levels: expected an array of strings, got ${describe(levels)}`);
      if (levels.length < CLINICAL_MIN_LEVELS || levels.length > CLINICAL_MAX_LEVELS) {
        throw new ValidationError(`${at}.levels: expected ${CLINICAL_MIN_LEVELS} to ${CLINICAL_MAX_LEVELS} levels, got ${levels.length}`);
      }
      const distinct = new Map<string, number>();
      levels.forEach((level: unknown, j) => {
        if (typeof level !== 'string' || level === '') {
          throw new ValidationError(`${at}.levels[${j}]: expected a non-empty string, got ${describe(level)}`);
        }
        if (level.trim() !== level) throw new ValidationError(`${at}.levels[${j}]: "${level}" starts or ends with a blank`);
        const firstLevel = distinct.get(level);
        if (firstLevel !== undefined) throw new ValidationError(`${at}.levels[${j}]: "${level}" repeats levels[${firstLevel}]`);
        distinct.set(level, j);
      });
    } else {
      throw new ValidationError(`${at}.type: expected 'numeric' or 'categorical', got ${describe(c.type)}`);
    }
  });
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'object') return 'an object';
  return String(value);
}
