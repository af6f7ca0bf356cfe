/**
 * `histofed-coordinator evaluate --model DIR --data DIR [--json]`: evaluates a saved model (a
 * global or per-site model, or an ensemble directory) on every usable image of a BreakHis tree,
 * with the same code as the central evaluation after each round (libs/ml evaluateModel /
 * outputMetrics): stage 1 and stage 2 per image and per patient, calibration, per magnification.
 */
import { resolve } from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import {
  FeatureCache,
  assertHasImages,
  createStainNormalizer,
  loadModelInputs,
  modelInputsKey,
  readBreakHisTree,
  readClinicalCsv,
  type BreakHisImage,
  type StainTarget,
} from '@histofed/data';
import type { LabeledImages } from '@histofed/fl-core';
import {
  applyTemperature,
  combineMembers,
  combinerKind,
  dataRowShape,
  isEnsembleDir,
  loadEnsemble,
  loadModel,
  outputMetrics,
  perImage,
  predictProbabilitiesAsync,
  splitTileClassifier,
  type EnsembleCombiner,
  type LoadedModel,
  type SavedModelManifest,
  type StagedReport,
} from '@histofed/ml';

export interface EvaluateReport extends StagedReport {
  readonly model: string;
  /** 'model' or 'ensemble' (then `members` lists the member directories). */
  readonly kind: 'model' | 'ensemble';
  readonly members?: readonly string[];
  /** An ensemble's combiner (histofed-ensemble.json `combine`). */
  readonly combine?: 'mean-probabilities' | 'weighted-mean' | 'stacking';
  readonly data: string;
  readonly inputSize: number;
  readonly classes: readonly string[];
  readonly subtypeClasses?: readonly string[];
  readonly problems: number;
}

/**
 * One member's per-image outputs on `images`, read as its manifest says (whole images, or the
 * covering grid of tiles; a backbone model's frozen part computes tile features, cached in
 * `featureCache` and shared by members with the same backbone). Inputs are kept in `inputs` per key.
 */
async function memberOutputs(
  m: LoadedModel,
  images: readonly BreakHisImage[],
  inputs: Map<string, Promise<LabeledImages>>,
  featureCache: FeatureCache | undefined,
  onProgress?: (line: string) => void,
  backboneDir?: string,
  clinicalCsv?: string,
): Promise<{ data: LabeledImages; probabilities: Float32Array }> {
  const { spec, preprocessing } = m.manifest;
  const stain = preprocessing.stainNormalization;
  const normalize = stain ? createStainNormalizer(stain as unknown as StainTarget) : undefined;
  const split = spec.backbone ? await splitTileClassifier(m.model, spec, { dir: backboneDir }) : undefined;
  try {
    const key = JSON.stringify([...modelInputsKey(spec), split?.extractor.id ?? null, stain]);
    let data = inputs.get(key);
    if (!data) {
      const clinical = spec.clinical && clinicalCsv ? await readClinicalCsv(clinicalCsv, spec.clinical) : undefined;
      data = loadModelInputs(images, spec, {
        clinical,
        extractor: split?.extractor,
        featureCache,
        transform: normalize ? { key: JSON.stringify(stain), apply: (rgb) => normalize(rgb) } : undefined,
        onProgress: onProgress
          ? (p) => (p.images % 50 === 0 || p.images === p.total) && onProgress(`tiles: ${p.images}/${p.total} images, ${p.rows} tiles (${p.cached} cached)`)
          : undefined,
      });
      inputs.set(key, data);
    }
    const rows = await data;
    const model = split?.trainable ?? m.model;
    const out = await predictProbabilitiesAsync(model, rows.images, rows.count, dataRowShape(rows));
    return { data: rows, probabilities: perImage(rows, out, spec).probabilities };
  } finally {
    split?.trainable.dispose();
  }
}

export async function evaluateSavedModel(
  modelDir: string,
  dataDir: string,
  options: {
    readonly featureCache?: FeatureCache;
    readonly onProgress?: (line: string) => void;
    readonly backboneDir?: string;
    /** Fusion models: the patients' clinical table; absent, every patient takes the no-record path. */
    readonly clinicalCsv?: string;
  } = {},
): Promise<EvaluateReport> {
  const ensemble = isEnsembleDir(modelDir);
  const loadedEnsemble = ensemble ? await loadEnsemble(modelDir) : null;
  const combine: EnsembleCombiner = loadedEnsemble?.manifest.combine ?? 'mean-probabilities';
  const loaded: (LoadedModel & { name?: string })[] = loadedEnsemble ? loadedEnsemble.members : [await loadModel(modelDir)];
  try {
    const manifest: SavedModelManifest = loaded[0].manifest;
    if (options.clinicalCsv && !loaded.some((m) => m.manifest.spec.clinical)) {
      throw new ValidationError(`--clinical ${options.clinicalCsv}: the model reads no clinical record (its spec declares no clinical columns)`);
    }
    const dataset = assertHasImages(await readBreakHisTree(dataDir));
    const inputs = new Map<string, Promise<LabeledImages>>();
    const outputs: Float32Array[] = [];
    let data: LabeledImages | undefined;
    // A fitted combiner (weighted mean, stacking) was fitted on the members' calibrated rows (each
    // with its manifest's temperature, as the sites computed them and predict reads them): it reads them so here too.
    const fitted = combinerKind(combine) !== 'mean-probabilities';
    for (const m of loaded) {
      const r = await memberOutputs(m, dataset.images, inputs, options.featureCache ?? new FeatureCache(), options.onProgress, options.backboneDir, options.clinicalCsv);
      data ??= r.data;
      const t = fitted ? m.manifest.calibration : undefined;
      outputs.push(t ? applyTemperature(r.probabilities, m.manifest.spec, { stage1: t.stage1, ...(t.subtype !== undefined ? { subtype: t.subtype } : {}) }) : r.probabilities);
    }
    // The same combiner as predict and the central evaluation (libs/ml combineMembers).
    const probabilities = combineMembers(outputs, manifest.spec, combine);
    const { report } = outputMetrics(data as LabeledImages, probabilities, manifest.spec);
    return {
      model: resolve(modelDir),
      kind: ensemble ? 'ensemble' : 'model',
      ...(ensemble ? { members: loaded.map((m) => m.name as string), combine: combinerKind(combine) } : {}),
      data: resolve(dataDir),
      inputSize: manifest.inputSize,
      classes: manifest.classes,
      ...(manifest.subtypeClasses ? { subtypeClasses: manifest.subtypeClasses } : {}),
      problems: dataset.problems.length,
      ...report,
    };
  } finally {
    for (const m of loaded) m.model.dispose();
  }
}

const pct = (v: number | null | undefined) => (v === null || v === undefined ? '  -  ' : v.toFixed(3));

/** The human-readable form of the report. */
export function formatEvaluateReport(r: EvaluateReport): string {
  const lines = [
    `${r.kind} ${r.model}${r.members ? ` (members: ${r.members.join(', ')}; combine: ${r.combine ?? 'mean-probabilities'})` : ''}`,
    `data ${r.data}: ${r.images} images of ${r.patients ?? '?'} patients at ${r.inputSize} px (${r.problems} unusable files skipped)`,
    `stage 1 (${r.classes.join(' vs ')}): image accuracy ${pct(r.stage1.imageAccuracy)}  patient accuracy ${pct(r.stage1.patientAccuracy)}  ` +
      `patient diagnosis ${pct(r.stage1.patientDiagnosisAccuracy)}  balanced ${pct(r.stage1.balancedAccuracy)}  AUC ${pct(r.stage1.auc)}  F1 ${pct(r.stage1.f1)}  ECE ${pct(r.ece)}`,
  ];
  if (r.stage2) {
    lines.push(
      `stage 2 (subtype, cascade): image accuracy ${pct(r.stage2.imageAccuracy)}  patient accuracy ${pct(r.stage2.patientAccuracy)}  macro F1 ${pct(r.stage2.macroF1)}`,
      `  confusion (rows true, columns predicted; ${(r.subtypeClasses ?? []).join(' ')}):`,
      ...r.stage2.confusion.map((row, i) => `  ${(r.subtypeClasses?.[i] ?? String(i)).padEnd(3)} ${row.map((v) => String(v).padStart(4)).join('')}`),
    );
  }
  for (const [mag, g] of Object.entries(r.byMagnification ?? {})) {
    lines.push(
      `  ${mag}X: ${g.images} images  stage-1 accuracy ${pct(g.stage1.imageAccuracy)}  patient ${pct(g.stage1.patientAccuracy)}` +
        (g.stage2 ? `  stage-2 accuracy ${pct(g.stage2.imageAccuracy)}` : ''),
    );
  }
  return lines.join('\n');
}

export function checkEvaluateFlags(opts: { model?: string; data?: string }): { model: string; data: string } {
  if (!opts.model) throw new ValidationError('--model: a saved model or ensemble directory is required');
  if (!opts.data) throw new ValidationError('--data: a BreakHis tree is required');
  return { model: opts.model, data: opts.data };
}
