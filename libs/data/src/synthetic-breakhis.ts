import { ValidationError } from '@histofed/fl-core';
import { mkdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import {
  BREAKHIS_MAGNIFICATIONS,
  BREAKHIS_SUBTYPES,
  breakHisRelativePath,
  type BreakHisImageKey,
} from './breakhis-names';
import { mapWithConcurrency } from './concurrency';
import { hashSeed, mulberry32 } from './prng';
import { renderTile } from './synthetic-texture';

export interface SyntheticBreakHisOptions {
  /** Patients (slides) per subtype; default 3. */
  readonly patientsPerSubtype?: number;
  /** Images per patient, magnifications taken in turn; default 6. */
  readonly imagesPerPatient?: number;
  /** Image width in pixels; default 140 (BreakHis is 700x460, this is a fifth). */
  readonly width?: number;
  /** Image height in pixels; default 92. */
  readonly height?: number;
  /** Default 1. The same seed and options give byte-identical files. */
  readonly seed?: number;
}

/**
 * Writes a synthetic BreakHis-like dataset below `outDir` (the folder that will hold
 * `BreaKHis_v1`), in the real folder layout and file names, over all 8 subtypes. Patient g's image j
 * is taken at magnification [40, 100, 200, 400][(g + j) % 4], so every magnification occurs;
 * sequence numbers count per patient and magnification from 001. Slide codes look like BreakHis
 * ones (`14-20731`, some with letters such as `15-4410CD`), every patient has its own case number,
 * and each patient has a slight stain tint and its own nucleus density and size.
 *
 * Existing files with the same names are overwritten; nothing else in `outDir` is touched.
 */
export async function generateSyntheticBreakHis(
  outDir: string,
  opts: SyntheticBreakHisOptions = {},
): Promise<{ images: number; patients: number }> {
  const patientsPerSubtype = opts.patientsPerSubtype ?? 3;
  const imagesPerPatient = opts.imagesPerPatient ?? 6;
  const width = opts.width ?? 140;
  const height = opts.height ?? 92;
  const seed = opts.seed ?? 1;
  for (const [name, value, min] of [
    ['patientsPerSubtype', patientsPerSubtype, 1],
    ['imagesPerPatient', imagesPerPatient, 1],
    ['width', width, 8],
    ['height', height, 8],
  ] as const) {
    if (!Number.isInteger(value) || value < min) throw new ValidationError(`${name} must be an integer >= ${min}, got ${value}`);
  }
  if (!Number.isFinite(seed)) throw new ValidationError(`seed must be a finite number, got ${seed}`);

  const rand = mulberry32(hashSeed(seed, 'patients'));
  const usedCases = new Set<number>();
  const suffixes = ['AB', 'CD', 'EF', 'DE', 'C', 'D', 'E', 'G'];
  const jobs: { key: BreakHisImageKey; patient: PatientLook }[] = [];
  let patientIndex = 0;
  for (const subtype of BREAKHIS_SUBTYPES) {
    for (let p = 0; p < patientsPerSubtype; p++, patientIndex++) {
      let caseNumber: number;
      do caseNumber = 1000 + Math.floor(rand() * 29000);
      while (usedCases.has(caseNumber));
      usedCases.add(caseNumber);
      const year = rand() < 0.85 ? 14 : 15;
      const suffix = rand() < 0.3 ? suffixes[Math.floor(rand() * suffixes.length)] : '';
      const patientId = `${year}-${caseNumber}${suffix}`;
      const look: PatientLook = {
        tint: [1 + 0.1 * (rand() - 0.5), 1 + 0.1 * (rand() - 0.5), 1 + 0.1 * (rand() - 0.5)],
        densityFactor: 0.85 + 0.3 * rand(),
        sizeFactor: 0.9 + 0.2 * rand(),
      };
      const seqByMag = new Map<number, number>();
      for (let j = 0; j < imagesPerPatient; j++) {
        const magnification = BREAKHIS_MAGNIFICATIONS[(patientIndex + j) % BREAKHIS_MAGNIFICATIONS.length];
        const sequence = (seqByMag.get(magnification) ?? 0) + 1;
        seqByMag.set(magnification, sequence);
        jobs.push({ key: { subtype: subtype.code, patientId, magnification, sequence }, patient: look });
      }
    }
  }

  const root = path.resolve(outDir);
  const folders = [...new Set(jobs.map((j) => path.dirname(path.join(root, breakHisRelativePath(j.key)))))];
  for (const folder of folders) await mkdir(folder, { recursive: true });

  await mapWithConcurrency(jobs, 8, async ({ key, patient }) => {
    const { subtype, patientId, magnification, sequence } = key;
    const pixels = renderTile(
      { width, height, subtype, magnification, ...patient },
      mulberry32(hashSeed(seed, 'image', patientId, magnification, sequence)),
    );
    const png = await sharp(pixels, { raw: { width, height, channels: 3 } })
      .png({ compressionLevel: 6, adaptiveFiltering: false })
      .toBuffer();
    await writeFile(path.join(root, breakHisRelativePath(key)), png);
  });

  return { images: jobs.length, patients: patientsPerSubtype * BREAKHIS_SUBTYPES.length };
}

interface PatientLook {
  readonly tint: readonly [number, number, number];
  readonly densityFactor: number;
  readonly sizeFactor: number;
}
