/**
 * `predict` from end to end: the images (files, folders, globs), an optional patients CSV, a
 * predictor, one image at a time with progress; failures listed with their reason; per-patient
 * aggregates (mean of the images' probabilities; flagged when any image is, or when the patient's
 * own measure crosses the rule's threshold).
 */
import * as path from 'node:path';
import { heatmapNamer, writeAttentionHeatmap } from './heatmap';
import { collectImageFiles } from './image-files';
import { readPatientsCsv } from './patients-csv';
import { PredictionFailure, Predictor } from './predictor';
import type { FailedFile as FailureRow, ImagePrediction, PatientPrediction, PredictionReport } from './prediction-report';
import { reviewDecision } from './review';

export interface PredictProgress {
  readonly done: number;
  readonly total: number;
  readonly file: string;
  readonly failed: number;
}

export interface PredictImagesOptions {
  readonly patientsCsv?: string;
  readonly cwd?: string;
  readonly onProgress?: (p: PredictProgress) => void;
  /** How file names appear in the report: 'absolute' (default) or relative to `cwd`. */
  readonly names?: 'absolute' | 'relative';
  /** Bag models: write each image's attention heat map (PNG of the image's size) into this directory. */
  readonly heatmapDir?: string;
}

export async function predictImages(predictor: Predictor, inputs: readonly string[], o: PredictImagesOptions = {}): Promise<PredictionReport> {
  const started = Date.now();
  const cwd = o.cwd ?? process.cwd();
  const show = (f: string) => (o.names === 'relative' ? path.relative(cwd, f) || f : f);
  const { files, failures: collectFailures } = await collectImageFiles(inputs, { cwd });
  const patients = o.patientsCsv ? await readPatientsCsv(o.patientsCsv) : null;
  const failures: FailureRow[] = [...collectFailures];
  const images: ImagePrediction[] = [];
  const heatmapName = heatmapNamer();
  for (const [i, file] of files.entries()) {
    try {
      const patient = patients?.patientOf(file) ?? undefined;
      const p = await predictor.predictFile(file, patient);
      const clinicalRecord = predictor.clinicalRecordOf(patient);
      const { measures, tileWeights, ...rest } = p;
      let heatmap: string | undefined;
      if (o.heatmapDir && tileWeights) {
        heatmap = path.join(o.heatmapDir, heatmapName(file));
        await writeAttentionHeatmap(file, tileWeights, heatmap);
      }
      images.push({
        ...rest,
        file: show(file),
        patient: patient ?? null,
        ...(heatmap ? { heatmap: show(heatmap) } : {}),
        ...(clinicalRecord !== undefined ? { clinicalRecord } : {}),
        ...reviewDecision(predictor.description.reviewRule, measures),
      });
    } catch (e) {
      if (!(e instanceof PredictionFailure) && !(e instanceof Error && e.name === 'DataError')) throw e;
      failures.push({ file: show(file), reason: e.message });
    }
    o.onProgress?.({ done: i + 1, total: files.length, file: show(file), failed: failures.length - collectFailures.length });
  }
  if (patients) for (const u of patients.unmatched(files)) failures.push({ file: `${o.patientsCsv} line ${u.line}`, reason: `names "${u.file}", which is not among the images` });
  const seconds = (Date.now() - started) / 1000;
  return {
    model: predictor.description,
    images,
    patients: patientAggregates(predictor, images),
    failures,
    summary: {
      images: images.length,
      failed: failures.length,
      flagged: images.filter((i) => i.review).length,
      seconds,
      imagesPerSecond: images.length > 0 && seconds > 0 ? images.length / seconds : null,
    },
  };
}

/** Per patient: the mean of its images' probabilities, its class and subtype, and its review flag. */
export function patientAggregates(predictor: Predictor, images: readonly ImagePrediction[]): PatientPrediction[] {
  const { classes, subtypeClasses } = predictor.description;
  const byPatient = new Map<string, ImagePrediction[]>();
  for (const im of images) if (im.patient !== null) byPatient.set(im.patient, [...(byPatient.get(im.patient) ?? []), im]);
  const out: PatientPrediction[] = [];
  for (const [patient, list] of [...byPatient].sort(([a], [b]) => a.localeCompare(b))) {
    const mean = classes.map((c) => list.reduce((s, im) => s + im.stage1.probabilities[c], 0) / list.length);
    let cls = 0;
    mean.forEach((v, i) => v > mean[cls] && (cls = i));
    // Subtype: the most frequent cascade subtype among the images of the patient's class (ties: the
    // higher mean probability), since images carry P(subtype | class), not the joint row.
    let subtype: PatientPrediction['subtype'] = null;
    if (subtypeClasses) {
      const votes = new Map<string, { n: number; p: number }>();
      for (const im of list) {
        if (!im.subtype || im.stage1.class !== classes[cls]) continue;
        const v = votes.get(im.subtype.class) ?? { n: 0, p: 0 };
        votes.set(im.subtype.class, { n: v.n + 1, p: v.p + im.subtype.probability });
      }
      const best = [...votes].sort((a, b) => b[1].n - a[1].n || b[1].p - a[1].p)[0];
      if (best) subtype = { class: best[0], probability: best[1].p / best[1].n };
    }
    const flagged = list.filter((im) => im.review).length;
    const disagree = list.filter((im) => im.stage1.class !== classes[cls]).length;
    const reasons: string[] = [];
    if (flagged > 0) reasons.push(`${flagged} of ${list.length} images flagged`);
    if (disagree > 0) reasons.push(`${disagree} of ${list.length} images disagree with the patient's class`);
    out.push({
      patient,
      images: list.length,
      stage1: { class: classes[cls], probability: mean[cls], probabilities: Object.fromEntries(classes.map((c, i) => [c, mean[i]])) },
      subtype,
      flaggedImages: flagged,
      review: flagged > 0 || disagree > 0,
      reason: reasons.length > 0 ? reasons.join('; ') : `all ${list.length} images agree and none is flagged`,
    });
  }
  return out;
}
