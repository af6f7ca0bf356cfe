import { readdir, realpath, stat } from 'node:fs/promises';
import * as path from 'node:path';
import {
  breakHisSlideFolderName,
  breakHisSubtypeByCode,
  parseBreakHisFileName,
  type BreakHisLabel,
  type BreakHisMagnification,
  type BreakHisSubtypeCode,
  type ParsedBreakHisName,
} from './breakhis-names';
import { mapWithConcurrency } from './concurrency';
import { DataError } from './data-error';
import { checkPngHeader } from './png-header';

/** One usable BreakHis image found on disk. */
export interface BreakHisImage {
  /** Absolute path of the PNG. */
  readonly path: string;
  /** Path below the folder given to readBreakHisTree, with `/` separators. */
  readonly relativePath: string;
  readonly label: BreakHisLabel;
  /** 0 benign, 1 malignant (STAGE1_CLASSES order). */
  readonly labelIndex: 0 | 1;
  readonly subtype: BreakHisSubtypeCode;
  /** Slide code (`14-22549AB`); BreakHis calls it the patient. */
  readonly patientId: string;
  /** Slide code without trailing letters (`14-22549`); splits group by it. */
  readonly caseId: string;
  readonly magnification: BreakHisMagnification;
  readonly sequence: number;
}

/** A PNG that was found but cannot be used, and why. `path` is absolute. */
export interface BreakHisProblem {
  readonly path: string;
  readonly reason: string;
}

export interface BreakHisDataset {
  /** The folder that was read, absolute. */
  readonly root: string;
  /** Usable images sorted by relativePath. */
  readonly images: BreakHisImage[];
  /** Unusable PNGs (and unreadable folders) sorted by path. */
  readonly problems: { path: string; reason: string }[];
}

const HEADER_CHECK_CONCURRENCY = 16;

/**
 * Reads a BreakHis folder tree. `root` may be the folder holding `BreaKHis_v1` or any folder inside
 * the tree (`.../breast/benign`, one slide folder, ...). Every `*.png` below it is considered: its name
 * must parse, agree with the folders it sits in (label, `SOB`, subtype, slide and magnification
 * folders, checked on the absolute path so they count even above `root`), and its PNG header and
 * trailer must be intact. Unusable files become `problems`, never exceptions; a second file with an
 * already-seen name is a problem (the first in relativePath order is kept). Other files are ignored.
 *
 * Throws DataError only when `root` does not exist or is not a folder. An empty result is not an
 * error here; see assertHasImages.
 */
export async function readBreakHisTree(root: string): Promise<BreakHisDataset> {
  const absRoot = path.resolve(root);
  let rootStat;
  try {
    rootStat = await stat(absRoot);
  } catch {
    throw new DataError(`BreakHis folder ${absRoot} does not exist`);
  }
  if (!rootStat.isDirectory()) throw new DataError(`BreakHis folder ${absRoot} is not a folder`);

  const problems: BreakHisProblem[] = [];
  const pngFiles: string[] = [];
  await collectPngFiles(absRoot, pngFiles, problems, new Set());

  const candidates: { file: string; parsed: ParsedBreakHisName }[] = [];
  for (const file of pngFiles) {
    const parsed = parseBreakHisFileName(path.basename(file));
    if (!parsed) {
      problems.push({ path: file, reason: 'file name is not a BreakHis name (SOB_<B|M>_<T>-<YY>-<slide>-<mag>-<seq>.png)' });
      continue;
    }
    const mismatches = folderMismatches(file, parsed);
    if (mismatches.length > 0) {
      problems.push({ path: file, reason: `file name disagrees with its folders: ${mismatches.join('; ')}` });
      continue;
    }
    candidates.push({ file, parsed });
  }

  const checks = await mapWithConcurrency(candidates, HEADER_CHECK_CONCURRENCY, (c) => checkPngHeader(c.file));
  const toImage = (file: string, parsed: ParsedBreakHisName): BreakHisImage => {
    const st = breakHisSubtypeByCode(parsed.subtype);
    return {
      path: file,
      relativePath: path.relative(absRoot, file).split(path.sep).join('/'),
      label: parsed.label,
      labelIndex: st ? st.labelIndex : 0,
      subtype: parsed.subtype,
      patientId: parsed.patientId,
      caseId: parsed.caseId,
      magnification: parsed.magnification,
      sequence: parsed.sequence,
    };
  };
  const usable: BreakHisImage[] = [];
  candidates.forEach((c, i) => {
    const check = checks[i];
    if (check.ok) usable.push(toImage(c.file, c.parsed));
    else problems.push({ path: c.file, reason: check.reason });
  });

  usable.sort((a, b) => compareStrings(a.relativePath, b.relativePath));
  const firstByName = new Map<string, BreakHisImage>();
  const images: BreakHisImage[] = [];
  for (const image of usable) {
    const name = path.basename(image.path);
    const first = firstByName.get(name);
    if (first) {
      problems.push({ path: image.path, reason: `duplicate file name; first seen at ${first.relativePath}` });
    } else {
      firstByName.set(name, image);
      images.push(image);
    }
  }
  problems.sort((a, b) => compareStrings(a.path, b.path));
  return { root: absRoot, images, problems };
}

/** Throws DataError naming the folder and the number of problems when `dataset` has no usable image. */
export function assertHasImages(dataset: BreakHisDataset): BreakHisDataset {
  if (dataset.images.length > 0) return dataset;
  const n = dataset.problems.length;
  const examples = dataset.problems
    .slice(0, 3)
    .map((p) => `${p.path}: ${p.reason}`)
    .join('; ');
  throw new DataError(
    `No usable BreakHis images in ${dataset.root} (${n} problem${n === 1 ? '' : 's'}${n > 0 ? `, e.g. ${examples}` : ''})`,
  );
}

/** Code-unit order, independent of locale, so results are identical on every machine. */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function collectPngFiles(dir: string, out: string[], problems: BreakHisProblem[], visited: Set<string>): Promise<void> {
  let real: string;
  let entries;
  try {
    real = await realpath(dir);
    if (visited.has(real)) return; // symlink loop or a folder linked twice
    visited.add(real);
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    problems.push({ path: dir, reason: `cannot read folder: ${(err as Error).message}` });
    return;
  }
  entries.sort((a, b) => compareStrings(a.name, b.name));
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    let isDir = entry.isDirectory();
    let isFile = entry.isFile();
    if (entry.isSymbolicLink()) {
      try {
        const target = await stat(full);
        isDir = target.isDirectory();
        isFile = target.isFile();
      } catch {
        if (entry.name.toLowerCase().endsWith('.png')) problems.push({ path: full, reason: 'broken symbolic link' });
        continue;
      }
    }
    if (isDir) await collectPngFiles(full, out, problems, visited);
    else if (isFile && entry.name.toLowerCase().endsWith('.png')) out.push(full);
  }
}

/** Ways in which the folders around `file` disagree with its parsed name (empty when they agree). */
function folderMismatches(file: string, parsed: ParsedBreakHisName): string[] {
  const st = breakHisSubtypeByCode(parsed.subtype);
  if (!st) return [`unknown subtype ${parsed.subtype}`];
  const parts = path.resolve(file).split(path.sep);
  const at = (fromEnd: number): string => parts[parts.length - 1 - fromEnd] ?? '(none)';
  const expected: [number, string, string][] = [
    [1, `${parsed.magnification}X`, 'magnification folder'],
    [2, breakHisSlideFolderName(parsed.subtype, parsed.patientId), 'slide folder'],
    [3, st.dirName, 'subtype folder'],
    [4, 'SOB', 'SOB folder'],
    [5, parsed.label, 'label folder'],
  ];
  return expected
    .filter(([fromEnd, want]) => at(fromEnd) !== want)
    .map(([fromEnd, want, what]) => `${what} is "${at(fromEnd)}" but the name implies "${want}"`);
}
