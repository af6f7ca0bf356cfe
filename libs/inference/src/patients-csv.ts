/**
 * `--patients CSV`: which patient each image belongs to, for patient-level results. Header
 * `file,patient`; `file` is a path relative to the CSV's folder (or absolute), or a bare file name
 * matched against the images' names. Simple CSV: no quoted commas (file names with commas are not
 * supported — say so rather than guess). Every bad row is named with its line.
 */
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { ValidationError } from '@histofed/fl-core';

export const PATIENTS_CSV_COLUMNS = ['file', 'patient'] as const;
const PATIENT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MAX_CSV_BYTES = 16 * 1024 * 1024;

export interface PatientMap {
  /** Patient of an image (absolute path), or undefined when the CSV does not name it. */
  patientOf(file: string): string | undefined;
  /** CSV rows that matched no image, for a warning (line and file as written). */
  unmatched(files: readonly string[]): { line: number; file: string }[];
}

interface Row {
  readonly line: number;
  readonly file: string;
  readonly patient: string;
}

export function parsePatientsCsv(text: string, csvPath: string): Row[] {
  const lines = text.split(/\r?\n/);
  const header = (lines[0] ?? '').replace(/^\uFEFF/, '').trim();
  if (header.split(',').map((c) => c.trim()).join(',') !== PATIENTS_CSV_COLUMNS.join(',')) {
    throw new ValidationError(`${csvPath}: the header must be "${PATIENTS_CSV_COLUMNS.join(',')}", got "${header}"`);
  }
  const rows: Row[] = [];
  const byFile = new Map<string, number>();
  for (let i = 1; i < lines.length; i++) {
    const raw = lines[i].trim();
    if (raw === '') continue;
    const cells = raw.split(',').map((c) => c.trim());
    const line = i + 1;
    if (cells.length !== 2) throw new ValidationError(`${csvPath} line ${line}: expected 2 columns (file,patient), got ${cells.length}`);
    const [file, patient] = cells;
    if (file === '') throw new ValidationError(`${csvPath} line ${line}: file is empty`);
    if (!PATIENT_ID.test(patient)) throw new ValidationError(`${csvPath} line ${line}: patient "${patient}" is not an id (letters, digits, . _ -, at most 128)`);
    const previous = byFile.get(file);
    if (previous !== undefined) throw new ValidationError(`${csvPath} line ${line}: file "${file}" was already given on line ${previous}`);
    byFile.set(file, line);
    rows.push({ line, file, patient });
  }
  return rows;
}

/** Reads and validates a patients CSV. */
export async function readPatientsCsv(csvPath: string): Promise<PatientMap> {
  let text: string;
  try {
    const buf = await readFile(csvPath);
    if (buf.length > MAX_CSV_BYTES) throw new Error(`larger than ${MAX_CSV_BYTES} bytes`);
    text = buf.toString('utf8');
  } catch (e) {
    throw new ValidationError(`--patients ${csvPath}: cannot read it: ${(e as Error).message}`);
  }
  const rows = parsePatientsCsv(text, csvPath);
  const dir = path.dirname(path.resolve(csvPath));
  const byPath = new Map<string, Row>();
  const byName = new Map<string, Row | null>(); // null: the bare name is given twice (ambiguous)
  for (const r of rows) {
    if (r.file.includes('/') || r.file.includes(path.sep)) byPath.set(path.resolve(dir, r.file), r);
    else {
      byPath.set(path.resolve(dir, r.file), r);
      byName.set(r.file, byName.has(r.file) ? null : r);
    }
  }
  const match = (file: string): Row | undefined => byPath.get(path.resolve(file)) ?? byName.get(path.basename(file)) ?? undefined;
  return {
    patientOf: (file) => match(file)?.patient,
    unmatched: (files) => {
      const used = new Set(files.map((f) => match(f)).filter((r): r is Row => r !== undefined));
      return rows.filter((r) => !used.has(r)).map((r) => ({ line: r.line, file: r.file }));
    },
  };
}
