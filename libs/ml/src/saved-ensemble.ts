/**
 * A saved ensemble: a directory with `histofed-ensemble.json` and one saved model directory per
 * member (saved-model.ts). The ensemble's output is the mean of its members' output rows (for a
 * two-stage model both softmax blocks stay distributions), which is how the coordinator combines
 * the global and the personalized per-site models.
 */
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { ValidationError } from '@histofed/fl-core';
import { loadModel, readModelManifest } from './saved-model';
import type { LoadedModel, LoadModelExpectations, SavedModelManifest } from './saved-model';
import { calibrationSchema, reviewRuleSchema } from './inference/model-metadata';

export const ENSEMBLE_FORMAT = 'histofed-ensemble';
export const ENSEMBLE_FORMAT_VERSION = 1;
export const ENSEMBLE_FILE = 'histofed-ensemble.json';

const memberName = z
  .string()
  // '@': a federated run's 'global@<site>' members (FedBN: the global model with that site's local tensors).
  .regex(/^[A-Za-z0-9][A-Za-z0-9@._-]{0,127}$/, 'a member is a sub-directory name (letters, digits, @ . _ -)');

const ensembleSchema = z.object({
  format: z.literal(ENSEMBLE_FORMAT),
  formatVersion: z.literal(ENSEMBLE_FORMAT_VERSION),
  combine: z.literal('mean-probabilities'),
  members: z.array(memberName).min(1),
  /** How to read the ensemble's (averaged) outputs (issue 15), when fitted. */
  calibration: calibrationSchema.optional(),
  review: reviewRuleSchema.optional(),
});

export type EnsembleManifest = z.infer<typeof ensembleSchema>;

/** True when `dir` holds an ensemble manifest (rather than a single model). */
export function isEnsembleDir(dir: string): boolean {
  return existsSync(path.join(dir, ENSEMBLE_FILE));
}

/**
 * Writes the ensemble manifest of `dir`, whose members are already saved in `dir/<member>`. All
 * members must be the same task (classes, subtypes, input size); throws naming the first that is not.
 */
export async function saveEnsembleManifest(dir: string, members: readonly string[]): Promise<EnsembleManifest> {
  const manifest = ensembleSchema.parse({
    format: ENSEMBLE_FORMAT,
    formatVersion: ENSEMBLE_FORMAT_VERSION,
    combine: 'mean-probabilities',
    members: [...members],
  });
  await checkMembers(dir, manifest);
  const file = path.join(dir, ENSEMBLE_FILE);
  await writeFile(`${file}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
  return manifest;
}

export async function readEnsembleManifest(dir: string): Promise<EnsembleManifest> {
  const file = path.join(dir, ENSEMBLE_FILE);
  if (!existsSync(file)) throw new ValidationError(`ensemble ${dir}: ${ENSEMBLE_FILE} is missing`);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new ValidationError(`${file}: not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  const r = raw as Record<string, unknown> | null;
  if (r?.['formatVersion'] !== undefined && r['format'] === ENSEMBLE_FORMAT && r['formatVersion'] !== ENSEMBLE_FORMAT_VERSION) {
    throw new ValidationError(`${file}: formatVersion ${JSON.stringify(r['formatVersion'])} is not supported (expected ${ENSEMBLE_FORMAT_VERSION})`);
  }
  const parsed = ensembleSchema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new ValidationError(`${file}: invalid ensemble manifest: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  return parsed.data;
}

function taskOf(m: SavedModelManifest): string {
  return JSON.stringify([m.classes, m.subtypeClasses ?? [], m.spec.subtypeParents ?? [], m.inputSize]);
}

async function checkMembers(dir: string, manifest: EnsembleManifest): Promise<SavedModelManifest[]> {
  const manifests: SavedModelManifest[] = [];
  for (const member of manifest.members) manifests.push(await readModelManifest(path.join(dir, member)));
  const first = taskOf(manifests[0]);
  manifests.forEach((m, i) => {
    if (taskOf(m) !== first) {
      throw new ValidationError(
        `ensemble ${dir}: member "${manifest.members[i]}" is made for another task (classes, subtypes or input size) than "${manifest.members[0]}"`,
      );
    }
  });
  return manifests;
}

/** Loads every member (checked to share one task). The caller disposes the members' models. */
export async function loadEnsemble(dir: string, expect: LoadModelExpectations = {}): Promise<{ manifest: EnsembleManifest; members: (LoadedModel & { name: string })[] }> {
  const manifest = await readEnsembleManifest(dir);
  await checkMembers(dir, manifest);
  const members: (LoadedModel & { name: string })[] = [];
  try {
    for (const name of manifest.members) members.push({ name, ...(await loadModel(path.join(dir, name), expect)) });
  } catch (e) {
    for (const m of members) m.model.dispose();
    throw e;
  }
  return { manifest, members };
}
