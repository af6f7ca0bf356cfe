import { STAGE1_CLASSES, type Stage1Class } from '@histofed/fl-core';

/**
 * BreakHis naming rules. An image lives at
 * `BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype dir>/SOB_<B|M>_<T>_<YY>-<slide>/<mag>X/`
 * and is named `SOB_<B|M>_<T>-<YY>-<slide>-<mag>-<seq>.png`, e.g.
 * `.../benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png`.
 */

/** Stage-1 label of a BreakHis image. */
export type BreakHisLabel = Stage1Class;

/** The eight BreakHis tumour subtypes by their code in file names. */
export type BreakHisSubtypeCode = 'A' | 'F' | 'PT' | 'TA' | 'DC' | 'LC' | 'MC' | 'PC';

export interface BreakHisSubtype {
  /** Code used in folder and file names (`A`, `DC`, ...). */
  readonly code: BreakHisSubtypeCode;
  /** Folder name under `<label>/SOB/` (`adenosis`, `ductal_carcinoma`, ...). */
  readonly dirName: string;
  readonly label: BreakHisLabel;
  /** Index of `label` in STAGE1_CLASSES: 0 benign, 1 malignant. */
  readonly labelIndex: 0 | 1;
}

const labelIndexOf = (label: BreakHisLabel): 0 | 1 => (STAGE1_CLASSES.indexOf(label) === 0 ? 0 : 1);

const subtype = (code: BreakHisSubtypeCode, dirName: string, label: BreakHisLabel): BreakHisSubtype =>
  Object.freeze({ code, dirName, label, labelIndex: labelIndexOf(label) });

/** All eight subtypes: the four benign ones first, then the four malignant ones. */
export const BREAKHIS_SUBTYPES: readonly BreakHisSubtype[] = Object.freeze([
  subtype('A', 'adenosis', 'benign'),
  subtype('F', 'fibroadenoma', 'benign'),
  subtype('PT', 'phyllodes_tumor', 'benign'),
  subtype('TA', 'tubular_adenoma', 'benign'),
  subtype('DC', 'ductal_carcinoma', 'malignant'),
  subtype('LC', 'lobular_carcinoma', 'malignant'),
  subtype('MC', 'mucinous_carcinoma', 'malignant'),
  subtype('PC', 'papillary_carcinoma', 'malignant'),
]);

/** The four optical magnifications of BreakHis, in increasing order. */
export const BREAKHIS_MAGNIFICATIONS = [40, 100, 200, 400] as const;
export type BreakHisMagnification = (typeof BREAKHIS_MAGNIFICATIONS)[number];

/** The subtype with this code (`'DC'`), or undefined. */
export function breakHisSubtypeByCode(code: string): BreakHisSubtype | undefined {
  return BREAKHIS_SUBTYPES.find((s) => s.code === code);
}

/** The subtype stored in this folder (`'ductal_carcinoma'`), or undefined. */
export function breakHisSubtypeByDirName(dirName: string): BreakHisSubtype | undefined {
  return BREAKHIS_SUBTYPES.find((s) => s.dirName === dirName);
}

/** What a BreakHis file name says about its image. */
export interface ParsedBreakHisName {
  readonly label: BreakHisLabel;
  readonly subtype: BreakHisSubtypeCode;
  /** The slide code, which BreakHis calls the patient: `14-22549AB`. */
  readonly patientId: string;
  /**
   * The slide code without trailing letters: `14-22549`. Slides 22549AB, 22549CD and 22549G share
   * this case and may come from one person, so splits group by it.
   */
  readonly caseId: string;
  readonly magnification: BreakHisMagnification;
  /** Image number within its slide and magnification (`001` -> 1). */
  readonly sequence: number;
}

// SOB_<B|M>_<T>-<YY>-<slide digits><slide letters>-<mag>-<seq>.png
const FILE_NAME = /^SOB_([BM])_([A-Z]{1,2})-(\d{2})-(\d+)([A-Z]*)-(40|100|200|400)-(\d{1,4})\.png$/;
// SOB_<B|M>_<T>_<YY>-<slide>
const SLIDE_FOLDER = /^SOB_([BM])_([A-Z]{1,2})_(\d{2})-(\d+)([A-Z]*)$/;

const LABEL_LETTER: Readonly<Record<BreakHisLabel, 'B' | 'M'>> = { benign: 'B', malignant: 'M' };

function labelledSubtype(letter: string, code: string): BreakHisSubtype | undefined {
  const found = breakHisSubtypeByCode(code);
  return found && LABEL_LETTER[found.label] === letter ? found : undefined;
}

/**
 * Parses a BreakHis image file name (a bare name; any directories in front are ignored).
 * Returns null for anything that is not a BreakHis name, including names whose B/M letter
 * disagrees with the subtype (`SOB_B_DC-...`) and sequence number 0.
 */
export function parseBreakHisFileName(name: string): ParsedBreakHisName | null {
  const base = name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1);
  const m = FILE_NAME.exec(base);
  if (!m) return null;
  const [, letter, code, year, slideDigits, slideLetters, mag, seq] = m;
  const found = labelledSubtype(letter, code);
  const sequence = Number(seq);
  if (!found || sequence < 1) return null;
  return {
    label: found.label,
    subtype: found.code,
    patientId: `${year}-${slideDigits}${slideLetters}`,
    caseId: `${year}-${slideDigits}`,
    magnification: Number(mag) as BreakHisMagnification,
    sequence,
  };
}

/** What a slide folder name (`SOB_B_A_14-22549AB`) says, or null if it is not one. */
export function parseBreakHisSlideFolder(
  name: string,
): { label: BreakHisLabel; subtype: BreakHisSubtypeCode; patientId: string } | null {
  const m = SLIDE_FOLDER.exec(name);
  if (!m) return null;
  const [, letter, code, year, slideDigits, slideLetters] = m;
  const found = labelledSubtype(letter, code);
  if (!found) return null;
  return { label: found.label, subtype: found.code, patientId: `${year}-${slideDigits}${slideLetters}` };
}

/** The case number of a slide code: trailing letters removed (`14-22549AB` -> `14-22549`). */
export function breakHisCaseId(patientId: string): string {
  return patientId.replace(/[A-Za-z]+$/, '');
}

/** Identifies one image for the name builders below. */
export interface BreakHisImageKey {
  readonly subtype: BreakHisSubtypeCode;
  readonly patientId: string;
  readonly magnification: BreakHisMagnification;
  readonly sequence: number;
}

function requireSubtype(code: BreakHisSubtypeCode): BreakHisSubtype {
  const found = breakHisSubtypeByCode(code);
  if (!found) throw new RangeError(`Unknown BreakHis subtype code "${code}"`);
  return found;
}

/** `SOB_B_A_14-22549AB` for subtype A, patient 14-22549AB. */
export function breakHisSlideFolderName(code: BreakHisSubtypeCode, patientId: string): string {
  return `SOB_${LABEL_LETTER[requireSubtype(code).label]}_${code}_${patientId}`;
}

/** `SOB_B_A-14-22549AB-40-001.png` (sequence padded to 3 digits). */
export function breakHisFileName(key: BreakHisImageKey): string {
  const letter = LABEL_LETTER[requireSubtype(key.subtype).label];
  const seq = String(key.sequence).padStart(3, '0');
  return `SOB_${letter}_${key.subtype}-${key.patientId}-${key.magnification}-${seq}.png`;
}

/** The path of an image below the folder that holds `BreaKHis_v1`, with `/` separators. */
export function breakHisRelativePath(key: BreakHisImageKey): string {
  const st = requireSubtype(key.subtype);
  return [
    'BreaKHis_v1',
    'histology_slides',
    'breast',
    st.label,
    'SOB',
    st.dirName,
    breakHisSlideFolderName(key.subtype, key.patientId),
    `${key.magnification}X`,
    breakHisFileName(key),
  ].join('/');
}
