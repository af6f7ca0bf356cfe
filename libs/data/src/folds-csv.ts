import { ValidationError } from '@histofed/fl-core';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { BREAKHIS_MAGNIFICATIONS, parseBreakHisFileName, type BreakHisMagnification } from './breakhis-names';
import type { BreakHisDataset, BreakHisImage } from './breakhis-reader';
import { DataError } from './data-error';

/**
 * The official BreakHis `Folds.csv`: five predefined train/test splits. Header `fold,mag,grp,filename`;
 * each row names one image for one fold, e.g.
 * `1,100,train,BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-22549AB/100X/SOB_B_A-14-22549AB-100-001.png`.
 */
export const FOLDS_CSV_COLUMNS = ['fold', 'mag', 'grp', 'filename'] as const;

export interface FoldEntry {
  /** 1-based line number in the file (the header is line 1). */
  readonly line: number;
  readonly fold: number;
  readonly magnification: BreakHisMagnification;
  readonly group: 'train' | 'test';
  /** The `filename` column as written (a relative path). */
  readonly filename: string;
  /** Its last path component, the BreakHis file name. */
  readonly fileName: string;
}

/** A row that cannot be used, or an entry whose image is not in the dataset. */
export interface FoldsProblem {
  readonly line: number;
  /** The `filename` column when there is one. */
  readonly filename?: string;
  readonly reason: string;
}

export interface ParsedFoldsCsv {
  /** Well-formed rows of the requested fold (all folds when none was requested), in file order. */
  readonly entries: FoldEntry[];
  /** Every fold number seen in well-formed rows, ascending. */
  readonly folds: number[];
  /** Malformed rows (any fold), with line number and reason. */
  readonly problems: FoldsProblem[];
}

/**
 * Parses the text of a Folds.csv. Throws DataError when the header is not `fold,mag,grp,filename`
 * (naming the expected columns); every other fault is a per-row problem: wrong number of fields,
 * fold not a positive integer, mag not 40/100/200/400, grp not train/test, a file name that is not
 * a BreakHis name or whose magnification disagrees with `mag`, and a file listed twice in one fold
 * (the first is kept). Blank lines are skipped; CRLF line ends, a BOM and quoted fields are accepted.
 */
export function parseFoldsCsv(text: string, options: { fold?: number } = {}): ParsedFoldsCsv {
  const { fold } = options;
  if (fold !== undefined && !(Number.isInteger(fold) && fold >= 1)) {
    throw new ValidationError(`fold must be a positive integer, got ${fold}`);
  }
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const header = splitCsvLine(lines[0] ?? '').map((h) => h.trim().toLowerCase());
  if (header.length !== FOLDS_CSV_COLUMNS.length || FOLDS_CSV_COLUMNS.some((c, i) => header[i] !== c)) {
    throw new DataError(
      `Folds.csv header must be "${FOLDS_CSV_COLUMNS.join(',')}" (columns fold, mag, grp, filename), got "${(lines[0] ?? '').trim()}"`,
    );
  }
  const entries: FoldEntry[] = [];
  const problems: FoldsProblem[] = [];
  const folds = new Set<number>();
  const seen = new Map<string, number>(); // `${fold}/${fileName}` -> line
  for (let k = 1; k < lines.length; k++) {
    const line = k + 1;
    const raw = lines[k];
    if (raw.trim() === '') continue;
    const fields = splitCsvLine(raw).map((f) => f.trim());
    if (fields.length !== 4) {
      problems.push({ line, reason: `expected 4 fields (fold,mag,grp,filename), got ${fields.length}` });
      continue;
    }
    const [foldText, magText, grp, filename] = fields;
    const bad = (reason: string): void => {
      problems.push({ line, ...(filename ? { filename } : {}), reason });
    };
    const rowFold = /^\d+$/.test(foldText) ? Number(foldText) : NaN;
    if (!(rowFold >= 1)) {
      bad(`fold "${foldText}" is not a positive integer`);
      continue;
    }
    const mag = Number(magText.replace(/x$/i, ''));
    if (!(BREAKHIS_MAGNIFICATIONS as readonly number[]).includes(mag) || magText === '') {
      bad(`mag "${magText}" is not one of ${BREAKHIS_MAGNIFICATIONS.join(', ')}`);
      continue;
    }
    const group = grp.toLowerCase();
    if (group !== 'train' && group !== 'test') {
      bad(`grp "${grp}" is neither train nor test`);
      continue;
    }
    if (filename === '') {
      bad('filename is empty');
      continue;
    }
    const fileName = filename.slice(Math.max(filename.lastIndexOf('/'), filename.lastIndexOf('\\')) + 1);
    const parsed = parseBreakHisFileName(fileName);
    if (!parsed) {
      bad(`"${fileName}" is not a BreakHis file name`);
      continue;
    }
    if (parsed.magnification !== mag) {
      bad(`mag ${mag} disagrees with the file name's magnification ${parsed.magnification}`);
      continue;
    }
    folds.add(rowFold);
    if (fold !== undefined && rowFold !== fold) continue;
    const key = `${rowFold}/${fileName}`;
    const first = seen.get(key);
    if (first !== undefined) {
      bad(`listed again in fold ${rowFold} (first on line ${first})`);
      continue;
    }
    seen.set(key, line);
    entries.push({ line, fold: rowFold, magnification: mag as BreakHisMagnification, group, filename, fileName });
  }
  return { entries, folds: [...folds].sort((a, b) => a - b), problems };
}

export interface FoldSplit {
  readonly fold: number;
  /** Dataset images the fold puts in train / test, in dataset order. */
  readonly train: BreakHisImage[];
  readonly test: BreakHisImage[];
  /** Entries of the fold whose image is not in the dataset (line, filename, reason). */
  readonly missing: FoldsProblem[];
  /** Malformed rows of the file (any fold). */
  readonly problems: FoldsProblem[];
  /** Dataset images the fold does not mention. */
  readonly unlisted: BreakHisImage[];
  /** Case numbers with images on both sides of this fold (empty for a patient-wise fold). */
  readonly casesOnBothSides: string[];
  /** Every fold number in the file. */
  readonly folds: number[];
}

/**
 * Matches the entries of one fold to a dataset's images by file name (BreakHis file names are
 * unique, and readBreakHisTree keeps one image per name). Entries with no such image are `missing`;
 * nothing throws for a missing file or a bad row.
 */
export function matchFold(parsed: ParsedFoldsCsv, dataset: BreakHisDataset, fold: number): FoldSplit {
  const byName = new Map<string, BreakHisImage>();
  for (const image of dataset.images) byName.set(path.basename(image.path), image);
  const side = new Map<BreakHisImage, 'train' | 'test'>();
  const missing: FoldsProblem[] = [];
  for (const e of parsed.entries) {
    if (e.fold !== fold) continue;
    const image = byName.get(e.fileName);
    if (!image) missing.push({ line: e.line, filename: e.filename, reason: `no image named ${e.fileName} in ${dataset.root}` });
    else side.set(image, e.group);
  }
  const train = dataset.images.filter((i) => side.get(i) === 'train');
  const test = dataset.images.filter((i) => side.get(i) === 'test');
  const testCases = new Set(test.map((i) => i.caseId));
  return {
    fold,
    train,
    test,
    missing,
    problems: parsed.problems,
    unlisted: dataset.images.filter((i) => !side.has(i)),
    casesOnBothSides: [...new Set(train.map((i) => i.caseId))].filter((c) => testCases.has(c)).sort(),
    folds: parsed.folds,
  };
}

/**
 * Reads `file` (the official Folds.csv or one in its format) and returns fold `fold` of `dataset`.
 * Throws DataError only when the file cannot be read or its header is wrong; missing images and bad
 * rows are reported in the result.
 */
export async function readFoldsCsv(file: string, dataset: BreakHisDataset, fold: number): Promise<FoldSplit> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new DataError(`Cannot read Folds.csv ${path.resolve(file)}: ${(err as Error).message}`);
  }
  return matchFold(parseFoldsCsv(text, { fold }), dataset, fold);
}

/** Splits one CSV line on commas outside double quotes; "" inside quotes is a literal quote. */
function splitCsvLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}
