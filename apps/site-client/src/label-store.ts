/**
 * The site's own label store (issue 16, active learning): labels a pathologist gave to images
 * outside the BreakHis tree, imported from a filled-in labelling queue (`histofed-site label
 * import`). Kept in `<state dir>/labels/labels.json` (mode 0600), one record per image: its
 * absolute path, its SHA-256 (a moved or changed file is detected and left out of training), the
 * class, the subtype (or none), the patient from the queue, when and from which queue it came. The
 * BreakHis tree is never touched. Nothing of it leaves the site: the coordinator learns the count.
 *
 * Import is all-or-nothing: every row is checked, every bad one is reported with its line and why,
 * and nothing is stored unless all are good. Rows whose label cells are both empty (not labelled
 * yet) are skipped and counted.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { BREAKHIS_SUBTYPES, type BreakHisImage, type BreakHisSubtypeCode } from '@histofed/data';
import { STAGE1_CLASSES, ValidationError, type Stage1Class } from '@histofed/fl-core';
import { parseCsv } from './csv';

export const LABEL_STORE_FILE = path.join('labels', 'labels.json');
const STORE_VERSION = 1;
const MAX_QUEUE_BYTES = 16 * 1024 * 1024;
const PATIENT_ID = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,255}$/;

export interface LabelRecord {
  /** Absolute path of the image. */
  readonly file: string;
  readonly sha256: string;
  readonly label: Stage1Class;
  /** BreakHis subtype code, or null when the pathologist gave the class only. */
  readonly subtype: BreakHisSubtypeCode | null;
  /** The patient the queue named (a patients CSV id or the folder proxy), or null. */
  readonly patient: string | null;
  readonly importedAt: string;
  /** The queue file it was imported from (absolute). */
  readonly queue: string;
}

export interface LabelRowError {
  readonly line: number;
  readonly file: string;
  readonly reason: string;
}

/** A refused import: every bad row, with its line and why; nothing was stored. */
export class LabelImportError extends ValidationError {
  constructor(
    readonly queue: string,
    readonly errors: readonly LabelRowError[],
  ) {
    super(
      `${queue}: ${errors.length} bad row${errors.length === 1 ? '' : 's'}, nothing imported:\n` +
        errors.map((e) => `  line ${e.line}${e.file ? ` (${e.file})` : ''}: ${e.reason}`).join('\n'),
    );
  }
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export function labelStorePath(stateDir: string): string {
  return path.join(stateDir, LABEL_STORE_FILE);
}

/** The stored records (none when the store does not exist yet). */
export async function readLabelStore(stateDir: string): Promise<LabelRecord[]> {
  const file = labelStorePath(stateDir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const parsed = JSON.parse(text) as { version?: number; labels?: LabelRecord[] };
  if (parsed.version !== STORE_VERSION || !Array.isArray(parsed.labels)) throw new ValidationError(`${file}: not a label store of version ${STORE_VERSION}`);
  return parsed.labels;
}

/** Replaces the store atomically (a temporary file renamed into place). */
export async function writeLabelStore(stateDir: string, labels: readonly LabelRecord[]): Promise<void> {
  const file = labelStorePath(stateDir);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, JSON.stringify({ version: STORE_VERSION, labels }, null, 1) + '\n', { mode: 0o600 });
  await rename(tmp, file);
}

/** A class cell: benign or malignant (any case); null when empty. */
function parseClass(cell: string): Stage1Class | null | undefined {
  const c = cell.trim().toLowerCase();
  if (c === '') return null;
  return (STAGE1_CLASSES as readonly string[]).includes(c) ? (c as Stage1Class) : undefined;
}

/** A subtype cell: a BreakHis code (A F PT TA DC LC MC PC) or folder name (ductal_carcinoma), any case; null when empty. */
function parseSubtype(cell: string): (typeof BREAKHIS_SUBTYPES)[number] | null | undefined {
  const c = cell.trim();
  if (c === '') return null;
  return BREAKHIS_SUBTYPES.find((s) => s.code === c.toUpperCase() || s.dirName === c.toLowerCase().replace(/[ -]/g, '_'));
}

export interface ImportOptions {
  /** Replace stored labels of the same images instead of refusing them as duplicates. */
  readonly replace?: boolean;
  readonly now?: Date;
}

export interface ImportSummary {
  readonly queue: string;
  /** New images labelled by this import. */
  readonly imported: number;
  /** Stored labels this import replaced (--replace). */
  readonly replaced: number;
  /** Queue rows without a label (left for later). */
  readonly skipped: number;
  /** Images in the store after the import. */
  readonly total: number;
  readonly byClass: Record<string, number>;
  readonly store: string;
}

/**
 * Checks every row of a filled-in queue against the files and the store; returns the new records
 * (or throws LabelImportError listing every bad row).
 */
export async function validateQueue(
  text: string,
  queuePath: string,
  stored: readonly LabelRecord[],
  o: ImportOptions = {},
): Promise<{ records: LabelRecord[]; replaced: LabelRecord[]; skipped: number }> {
  let csv;
  try {
    csv = parseCsv(text);
  } catch (e) {
    throw new LabelImportError(queuePath, [{ line: 0, file: '', reason: (e as Error).message }]);
  }
  const header = (csv[0]?.cells ?? []).map((c) => c.trim().toLowerCase());
  const col = (name: string) => header.indexOf(name);
  const missing = ['file', 'label_class', 'label_subtype'].filter((c) => col(c) < 0);
  if (missing.length > 0) {
    throw new LabelImportError(queuePath, [{ line: csv[0]?.line ?? 1, file: '', reason: `the header lacks the column${missing.length > 1 ? 's' : ''} ${missing.join(', ')} (a queue written by histofed-site suggest has them)` }]);
  }
  const dir = path.dirname(path.resolve(queuePath));
  const errors: LabelRowError[] = [];
  const records: LabelRecord[] = [];
  const replaced: LabelRecord[] = [];
  let skipped = 0;
  const byPath = new Map<string, number>();
  const byHash = new Map<string, number>();
  const storedByPath = new Map(stored.map((r) => [r.file, r]));
  const storedByHash = new Map(stored.map((r) => [r.sha256, r]));
  const importedAt = (o.now ?? new Date()).toISOString();
  for (const rec of csv.slice(1)) {
    const cell = (name: string) => (col(name) >= 0 ? (rec.cells[col(name)] ?? '') : '');
    const fileCell = cell('file').trim();
    const bad = (reason: string) => errors.push({ line: rec.line, file: fileCell, reason });
    if (rec.cells.length !== header.length) {
      bad(`expected ${header.length} columns, got ${rec.cells.length} (quote a field that holds a comma)`);
      continue;
    }
    const cls = parseClass(cell('label_class'));
    const sub = parseSubtype(cell('label_subtype'));
    if (cls === null && sub === null) {
      skipped++;
      continue;
    }
    if (fileCell === '') {
      bad('file is empty');
      continue;
    }
    if (cls === undefined) {
      bad(`unknown class "${cell('label_class').trim()}" (benign or malignant)`);
      continue;
    }
    if (sub === undefined) {
      bad(`unknown subtype "${cell('label_subtype').trim()}" (one of ${BREAKHIS_SUBTYPES.map((s) => s.code).join(' ')}, or empty)`);
      continue;
    }
    // A subtype alone names its class; both given must agree.
    const label: Stage1Class = cls ?? (sub as NonNullable<typeof sub>).label;
    if (sub && sub.label !== label) {
      bad(`subtype ${sub.code} is ${sub.label}, not ${label}`);
      continue;
    }
    const patientCell = cell('patient').trim();
    if (patientCell !== '' && !PATIENT_ID.test(patientCell)) {
      bad(`patient "${patientCell}" is not an id (letters, digits, . _ : / -, at most 256)`);
      continue;
    }
    const file = path.resolve(dir, fileCell);
    try {
      const st = await stat(file);
      if (!st.isFile()) throw new Error('not a regular file');
    } catch (e) {
      bad(`unknown file: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
      continue;
    }
    try {
      const meta = await sharp(file, { limitInputPixels: false }).metadata();
      if (!meta.width || !meta.height) throw new Error('no dimensions');
    } catch (e) {
      bad(`not a readable image (PNG, JPEG or TIFF): ${(e as Error).message}`);
      continue;
    }
    const sha256 = await sha256File(file);
    const sameLine = byPath.get(file) ?? byHash.get(sha256);
    if (sameLine !== undefined) {
      bad(`duplicate: ${byPath.has(file) ? 'the same file' : 'the same image (identical content)'} as line ${sameLine}`);
      continue;
    }
    byPath.set(file, rec.line);
    byHash.set(sha256, rec.line);
    const old = storedByPath.get(file) ?? storedByHash.get(sha256);
    if (old) {
      if (!o.replace) {
        bad(`duplicate: already labelled ${old.label}${old.subtype ? `/${old.subtype}` : ''}${old.file === file ? '' : ` as ${old.file} (identical content)`} on ${old.importedAt} (give --replace to relabel it)`);
        continue;
      }
      replaced.push(old);
    }
    records.push({ file, sha256, label, subtype: sub ? sub.code : null, patient: patientCell || null, importedAt, queue: path.resolve(queuePath) });
  }
  if (errors.length > 0) throw new LabelImportError(queuePath, errors);
  return { records, replaced, skipped };
}

/** `histofed-site label import`: validates the queue, then stores all its labels or none. */
export async function importLabels(stateDir: string, queuePath: string, o: ImportOptions = {}): Promise<ImportSummary> {
  let buf: Buffer;
  try {
    buf = await readFile(queuePath);
  } catch (e) {
    throw new ValidationError(`--queue ${queuePath}: cannot read it: ${(e as Error).message}`);
  }
  if (buf.length > MAX_QUEUE_BYTES) throw new ValidationError(`--queue ${queuePath}: larger than ${MAX_QUEUE_BYTES} bytes`);
  const stored = await readLabelStore(stateDir);
  const { records, replaced, skipped } = await validateQueue(buf.toString('utf8'), queuePath, stored, o);
  const gone = new Set(replaced);
  const next = [...stored.filter((r) => !gone.has(r)), ...records];
  if (records.length > 0) await writeLabelStore(stateDir, next);
  const byClass: Record<string, number> = {};
  for (const r of next) byClass[r.label] = (byClass[r.label] ?? 0) + 1;
  return { queue: path.resolve(queuePath), imported: records.length - replaced.length, replaced: replaced.length, skipped, total: next.length, byClass, store: labelStorePath(stateDir) };
}

export interface LabelledImages {
  /** Stored labels whose file is still there with the same content. */
  readonly usable: LabelRecord[];
  /** Stored labels left out, and why (file missing or changed). */
  readonly problems: { file: string; reason: string }[];
}

/** The stored labels a site can train on: each file checked against its SHA-256. */
export async function loadLabelledImages(stateDir: string): Promise<LabelledImages> {
  const usable: LabelRecord[] = [];
  const problems: { file: string; reason: string }[] = [];
  for (const r of await readLabelStore(stateDir)) {
    try {
      if ((await sha256File(r.file)) === r.sha256) usable.push(r);
      else problems.push({ file: r.file, reason: 'the file changed since it was labelled (SHA-256 differs): label it again' });
    } catch (e) {
      problems.push({ file: r.file, reason: `cannot read it: ${(e as Error).message}` });
    }
  }
  return { usable, problems };
}

/**
 * A stored label as a training image. Only the fields training reads are real: path, label,
 * subtype (a class-only label gets a placeholder subtype and is used by single-stage models only,
 * see SiteData), and the patient group (the queue's patient, else the image alone). Magnification
 * and sequence are unknown (placeholders; they only label per-magnification validation metrics, and
 * labelled images never go to validation).
 */
export function labelledTrainingImage(r: LabelRecord): BreakHisImage {
  const subtype = r.subtype ?? (r.label === 'benign' ? 'A' : 'DC');
  const patientId = `labelled:${r.patient ?? r.sha256.slice(0, 16)}`;
  return {
    path: r.file,
    relativePath: path.basename(r.file),
    label: r.label,
    labelIndex: r.label === 'benign' ? 0 : 1,
    subtype,
    patientId,
    caseId: patientId,
    magnification: 40,
    sequence: 0,
  };
}
