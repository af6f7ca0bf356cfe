/**
 * Reads and updates the reading instructions (calibration, review rule) of a saved model or
 * ensemble directory: the ensemble's own when `dir` is an ensemble, else the model's.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { ENSEMBLE_FILE, isEnsembleDir, readEnsembleManifest } from '../saved-ensemble';
import { MANIFEST_FILE, readModelManifest } from '../saved-model';
import { calibrationSchema, reviewRuleSchema, type ModelReading } from './model-metadata';

/** The calibration and review rule a model or ensemble directory carries (each may be absent). */
export async function readModelReading(dir: string): Promise<ModelReading> {
  const m = isEnsembleDir(dir) ? await readEnsembleManifest(dir) : await readModelManifest(dir);
  return { ...(m.calibration ? { calibration: m.calibration } : {}), ...(m.review ? { review: m.review } : {}) };
}

/**
 * Sets (or, with null, removes) the calibration and/or review rule in the manifest of `dir` (an
 * ensemble's manifest when `dir` is an ensemble), validated first; written atomically, the rest of
 * the manifest unchanged. A field left undefined is kept as it is.
 */
export async function writeModelReading(
  dir: string,
  reading: { readonly calibration?: ModelReading['calibration'] | null; readonly review?: ModelReading['review'] | null },
): Promise<ModelReading> {
  const ensemble = isEnsembleDir(dir);
  // Validates the current manifest (a broken one is not rewritten).
  if (ensemble) await readEnsembleManifest(dir);
  else await readModelManifest(dir);
  const file = path.join(dir, ensemble ? ENSEMBLE_FILE : MANIFEST_FILE);
  const raw = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  for (const [key, schema] of [['calibration', calibrationSchema], ['review', reviewRuleSchema]] as const) {
    const value = reading[key];
    if (value === undefined) continue;
    if (value === null) {
      delete raw[key];
      continue;
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new ValidationError(`${file}: invalid ${key}: ${[key, ...i.path].join('.')}: ${i.message}`);
    }
    raw[key] = parsed.data;
  }
  await writeFile(`${file}.tmp`, `${JSON.stringify(raw, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
  return readModelReading(dir);
}
