/**
 * A saved ensemble: a directory with `histofed-ensemble.json` and one saved model directory per
 * member (saved-model.ts). The manifest's `combine` names how the members' output rows are combined
 * (ensemble-combiner.ts: 'mean-probabilities', the default and what older manifests say; a
 * `weighted-mean`; or `stacking`); for a two-stage model both softmax blocks stay distributions.
 */
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { ValidationError } from '@histofed/fl-core';
import { loadModel, readModelManifest } from './saved-model';
import type { LoadedModel, LoadModelExpectations, SavedModelManifest } from './saved-model';
import { calibrationSchema, reviewRuleSchema } from './inference/model-metadata';
import { combinerProblem, combinerSchema, type EnsembleCombiner } from './ensemble-combiner';

export const ENSEMBLE_FORMAT = 'histofed-ensemble';
export const ENSEMBLE_FORMAT_VERSION = 1;
export const ENSEMBLE_FILE = 'histofed-ensemble.json';

const memberName = z
  .string()
  // '@': a federated run's 'global@<site>' members (FedBN: the global model with that site's local tensors).
  .regex(/^[A-Za-z0-9][A-Za-z0-9@._-]{0,127}$/, 'a member is a sub-directory name (letters, digits, @ . _ -)');

const ensembleSchema = z
  .object({
    format: z.literal(ENSEMBLE_FORMAT),
    formatVersion: z.literal(ENSEMBLE_FORMAT_VERSION),
    /** How the members' rows are combined (issue 16; ensemble-combiner.ts). */
    combine: combinerSchema,
    members: z.array(memberName).min(1),
    /** How to read the ensemble's (combined) outputs (issue 15), when fitted. */
    calibration: calibrationSchema.optional(),
    review: reviewRuleSchema.optional(),
  })
  .superRefine((m, ctx) => {
    if (new Set(m.members).size !== m.members.length) ctx.addIssue({ code: 'custom', message: 'a member is listed twice', path: ['members'] });
    const problem = combinerProblem(m.combine, m.members.length);
    if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['combine'] });
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
export async function saveEnsembleManifest(dir: string, members: readonly string[], combine: EnsembleCombiner = 'mean-probabilities'): Promise<EnsembleManifest> {
  const parsed = ensembleSchema.safeParse({
    format: ENSEMBLE_FORMAT,
    formatVersion: ENSEMBLE_FORMAT_VERSION,
    combine,
    members: [...members],
  });
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new ValidationError(`ensemble ${dir}: invalid ensemble manifest: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  const manifest = parsed.data;
  const first = (await checkMembers(dir, manifest))[0].spec;
  const layout = { numClasses: first.numClasses, ...(first.subtypeParents ? { subtypeParents: first.subtypeParents } : {}) };
  const problem = combinerProblem(manifest.combine, members.length, layout);
  if (problem) throw new ValidationError(`ensemble ${dir}: combine: ${problem}`);
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
  const first = (await checkMembers(dir, manifest))[0].spec;
  const problem = combinerProblem(manifest.combine, manifest.members.length, { numClasses: first.numClasses, ...(first.subtypeParents ? { subtypeParents: first.subtypeParents } : {}) });
  if (problem) throw new ValidationError(`ensemble ${dir}: combine: ${problem}`);
  const members: (LoadedModel & { name: string })[] = [];
  try {
    for (const name of manifest.members) members.push({ name, ...(await loadModel(path.join(dir, name), expect)) });
  } catch (e) {
    for (const m of members) m.model.dispose();
    throw e;
  }
  return { manifest, members };
}
