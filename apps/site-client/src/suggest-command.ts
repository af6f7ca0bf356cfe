/**
 * `histofed-site suggest --model DIR --budget N [--strategy ...]`: ranks the site's unlabelled
 * images for a pathologist (issue 16) and writes the labelling queue, a CSV with the label columns
 * empty: `rank,file,patient,suggested_class,suggested_subtype,probability,score,strategy,why,
 * label_class,label_subtype`. Images already in the site's label store are left out. Patients:
 * from `--patients CSV` (file,patient), else the image's folder below the unlabelled folder (files
 * directly in it: each its own patient) — a proxy, said in the output.
 */
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { FeatureCache, defaultImageCacheDir, featureCacheDirFor } from '@histofed/data';
import { PredictionFailure, Predictor, collectImageFiles, readPatientsCsv, type FileFailure } from '@histofed/inference';
import { csvLine } from './csv';
import { readLabelStore, sha256File } from './label-store';
import { SUGGEST_STRATEGIES, rankForLabelling, type Candidate, type QueueEntry, type SuggestStrategy } from './suggest';
import { num } from './train-command';

export const QUEUE_COLUMNS = [
  'rank',
  'file',
  'patient',
  'suggested_class',
  'suggested_subtype',
  'probability',
  'score',
  'strategy',
  'why',
  'label_class',
  'label_subtype',
] as const;

export interface SuggestFlags {
  model?: string;
  budget?: string;
  strategy?: string;
  unlabeled?: string;
  patients?: string;
  perPatient?: string;
  out?: string;
  /** The label store's state dir (resolved by the caller; absent: nothing is excluded). */
  stateDir?: string;
  mcDropout?: string;
  seed: string;
  backbone?: string;
  cacheDir?: string;
  cache: boolean;
  json?: boolean;
}

export interface SuggestSummary {
  readonly model: string;
  readonly strategy: SuggestStrategy;
  readonly budget: number;
  readonly unlabeled: string;
  /** Images considered (found, not yet labelled, predicted). */
  readonly candidates: number;
  readonly alreadyLabelled: number;
  readonly patients: number;
  readonly patientSource: 'csv' | 'folder';
  readonly perPatientCap: number;
  readonly capLifted: boolean;
  readonly failures: FileFailure[];
  readonly out: string;
  readonly queue: QueueEntry[];
}

/** The patient of each unlabelled image: the CSV's, else its folder below `root` (top-level files: each alone). */
export function folderPatient(root: string, file: string): string {
  const rel = path.relative(root, path.dirname(file)).split(path.sep).join('/');
  return rel === '' ? `file:${path.basename(file)}` : `folder:${rel}`;
}

export function formatQueueCsv(queue: readonly QueueEntry[]): string {
  const lines = [QUEUE_COLUMNS.join(',')];
  for (const q of queue) {
    lines.push(csvLine([q.rank, q.file, q.patient, q.suggestedClass, q.suggestedSubtype, q.probability.toFixed(4), q.score.toFixed(4), q.strategy, q.why, '', '']));
  }
  return lines.join('\n') + '\n';
}

export async function suggestCommand(f: SuggestFlags, progress: (line: string) => void): Promise<SuggestSummary> {
  if (!f.model) throw new ValidationError('--model: a saved model or ensemble directory is required');
  if (!f.unlabeled) throw new ValidationError('--unlabeled DIR (or HISTOFED_UNLABELED_DIR): the folder of unlabelled images is required');
  const strategy = (f.strategy ?? 'entropy') as SuggestStrategy;
  if (!SUGGEST_STRATEGIES.includes(strategy)) throw new ValidationError(`--strategy must be one of ${SUGGEST_STRATEGIES.join(', ')}, got "${f.strategy}"`);
  const budget = num('--budget', f.budget ?? '', (n) => Number.isInteger(n) && n >= 1 && n <= 100_000, 'an integer in [1, 100000]');
  const perPatient = f.perPatient === undefined ? undefined : num('--per-patient', f.perPatient, (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  const seed = num('--seed', f.seed, Number.isInteger, 'an integer');
  const passes = num('--mc-dropout', f.mcDropout ?? (strategy === 'bald' ? '20' : '0'), (n) => Number.isInteger(n) && n >= 0 && n <= 256, 'an integer in [0, 256] (passes)');
  if (strategy === 'bald' && passes < 2) throw new ValidationError('--strategy bald needs --mc-dropout of at least 2 passes');
  const root = path.resolve(f.unlabeled);
  const out = path.resolve(f.out ?? 'labelling-queue.csv');
  const { files, failures } = await collectImageFiles([root]);
  const patients = f.patients ? await readPatientsCsv(f.patients) : null;

  // Images already labelled (same path or same content) are not asked again.
  const stored = f.stateDir ? await readLabelStore(f.stateDir) : [];
  const labelledPaths = new Set(stored.map((r) => r.file));
  const labelledHashes = new Set(stored.map((r) => r.sha256));
  const todo: string[] = [];
  const labelledFiles: string[] = [];
  for (const file of files) {
    if (labelledPaths.has(file) || labelledHashes.has(await sha256File(file))) labelledFiles.push(file);
    else todo.push(file);
  }

  const featureCache = f.cache ? new FeatureCache({ dir: featureCacheDirFor(f.cacheDir ?? defaultImageCacheDir(process.env)) }) : undefined;
  const predictor = await Predictor.load(f.model, { backboneDir: f.backbone, featureCache, mcDropoutPasses: passes, mcDropoutSeed: seed });
  try {
    const d = predictor.description;
    progress(`model ${d.path} (${d.kind}${d.members.length > 1 ? `, ${d.members.length} members` : ''}); ${todo.length} unlabelled images, ${labelledFiles.length} already labelled`);
    if (strategy === 'ensemble' && d.kind !== 'ensemble') {
      throw new ValidationError(`--strategy ensemble needs an ensemble: ${d.path} is a single model; give an ensemble directory (e.g. a run's final models, <state dir>/models/<run id>)`);
    }
    const candidates: Candidate[] = [];
    let last = 0;
    for (const [i, file] of todo.entries()) {
      try {
        const p = await predictor.predictFile(file);
        candidates.push({
          file,
          patient: patients?.patientOf(file) ?? folderPatient(root, file),
          stage1: p.stage1,
          subtype: p.subtype,
          uncertainty: p.uncertainty,
          ...(strategy === 'coreset' ? { features: await predictor.imageFeatures(file) } : {}),
        });
      } catch (e) {
        if (!(e instanceof PredictionFailure) && !(e instanceof Error && e.name === 'DataError')) throw e;
        failures.push({ file, reason: e.message });
      }
      const now = Date.now();
      if (i + 1 === todo.length || now - last >= 2000 || i === 0) {
        last = now;
        progress(`images ${i + 1}/${todo.length}: ${path.relative(root, file)}`);
      }
    }
    // Coreset: images labelled before are the first centers.
    const labelledFeatures: Float32Array[] = [];
    if (strategy === 'coreset') {
      for (const file of labelledFiles) labelledFeatures.push(await predictor.imageFeatures(file).catch(() => null as unknown as Float32Array));
    }
    const ranking = rankForLabelling(candidates, { strategy, budget, perPatient, seed, labelledFeatures: labelledFeatures.filter(Boolean) });
    await writeFile(out, formatQueueCsv(ranking.queue), { mode: 0o600 });
    return {
      model: d.path,
      strategy,
      budget,
      unlabeled: root,
      candidates: candidates.length,
      alreadyLabelled: labelledFiles.length,
      patients: ranking.patients,
      patientSource: patients ? 'csv' : 'folder',
      perPatientCap: ranking.perPatientCap,
      capLifted: ranking.capLifted,
      failures,
      out,
      queue: ranking.queue,
    };
  } finally {
    predictor.dispose();
  }
}

export function formatSuggestSummary(s: SuggestSummary): string {
  const lines = [
    `${s.queue.length} of ${s.candidates} unlabelled images queued for labelling (${s.strategy}, budget ${s.budget}) from ${s.patients} patients` +
      ` (${s.patientSource === 'csv' ? 'from --patients' : 'one per folder: no --patients CSV'}), at most ${s.perPatientCap} per patient${s.capLifted ? ', cap lifted to fill the budget' : ''}` +
      `${s.alreadyLabelled > 0 ? `; ${s.alreadyLabelled} already labelled, left out` : ''}`,
    `queue written to ${s.out}: fill label_class (benign|malignant) and label_subtype (A F PT TA DC LC MC PC, or empty), then: histofed-site label import --queue ${s.out}`,
  ];
  for (const q of s.queue.slice(0, 10)) lines.push(`  ${q.rank}. ${path.relative(s.unlabeled, q.file)}  ${q.why}`);
  if (s.queue.length > 10) lines.push(`  ... ${s.queue.length - 10} more in the queue`);
  for (const fl of s.failures) lines.push(`not read: ${fl.file}: ${fl.reason}`);
  return lines.join('\n');
}
