/**
 * `histofed-site predict --model DIR <images...>`: classifies new images (any file names, PNG, JPEG
 * or TIFF, any size) with a saved model or ensemble, at the hospital: stage 1 and subtype with their
 * probabilities (calibrated when the model carries a temperature), uncertainty, and a review flag
 * with its reason; per patient with `--patients CSV`. Output: a table, `--json` (one object) or
 * `--csv`; progress on stderr; files that cannot be read are listed with the reason.
 */
import { ValidationError } from '@histofed/fl-core';
import { FeatureCache, defaultImageCacheDir, featureCacheDirFor } from '@histofed/data';
import {
  DEFAULT_MAX_FILE_BYTES,
  DEFAULT_MAX_PIXELS,
  Predictor,
  formatPredictionCsv,
  formatPredictionTable,
  predictImages,
  type PredictionReport,
} from '@histofed/inference';
import { num } from './train-command';

export interface PredictFlags {
  model?: string;
  patients?: string;
  json?: boolean;
  csv?: boolean;
  mcDropout?: string;
  seed: string;
  backbone?: string;
  cacheDir?: string;
  cache: boolean;
  maxFileMb?: string;
  maxMegapixels?: string;
  heatmap?: string;
  clinical?: string;
}

export interface PredictOutput {
  readonly report: PredictionReport;
  readonly text: string;
}

export async function predictCommand(images: readonly string[], f: PredictFlags, progress: (line: string) => void): Promise<PredictOutput> {
  if (!f.model) throw new ValidationError('--model: a saved model or ensemble directory is required');
  if (images.length === 0) throw new ValidationError('images: give at least one file, folder or glob pattern');
  if (f.json && f.csv) throw new ValidationError('--json and --csv: choose one output format');
  const passes = num('--mc-dropout', f.mcDropout ?? '0', (n) => Number.isInteger(n) && n >= 0 && n <= 256, 'an integer in [0, 256] (passes)');
  const seed = num('--seed', f.seed, Number.isInteger, 'an integer');
  const maxFileBytes = f.maxFileMb
    ? num('--max-file-mb', f.maxFileMb, (n) => n > 0 && n <= 4096, 'a number of MiB in (0, 4096]') * 1024 * 1024
    : DEFAULT_MAX_FILE_BYTES;
  const maxPixels = f.maxMegapixels
    ? num('--max-megapixels', f.maxMegapixels, (n) => n > 0 && n <= 1024, 'a number in (0, 1024]') * 1024 * 1024
    : DEFAULT_MAX_PIXELS;
  if (f.clinical && !f.patients) throw new ValidationError(`--clinical ${f.clinical}: needs --patients CSV, which names each image's patient (records are looked up by patient)`);
  const featureCache = f.cache ? new FeatureCache({ dir: featureCacheDirFor(f.cacheDir ?? defaultImageCacheDir(process.env)) }) : undefined;
  const predictor = await Predictor.load(f.model, {
    backboneDir: f.backbone,
    featureCache,
    mcDropoutPasses: passes,
    mcDropoutSeed: seed,
    maxFileBytes,
    maxPixels,
    ...(f.clinical ? { clinicalCsv: f.clinical } : {}),
  });
  try {
    progress(`model ${predictor.description.path} (${predictor.description.kind}${predictor.description.members.length > 1 ? `, ${predictor.description.members.length} members` : ''})`);
    const clinical = predictor.description.clinical;
    if (clinical && !f.clinical) {
      progress(`the model fuses a clinical record (${clinical.columns.join(', ')}); without --clinical CSV every patient takes its no-record path`);
    }
    if (f.heatmap && !predictor.weighsTiles) {
      progress(`--heatmap ${f.heatmap}: the model does not weigh tiles (kinds attention-mil and transformer-mil do): no heat map is written`);
    }
    let last = 0;
    const report = await predictImages(predictor, images, {
      patientsCsv: f.patients,
      names: 'relative',
      ...(f.heatmap && predictor.weighsTiles ? { heatmapDir: f.heatmap } : {}),
      onProgress: (p) => {
        const now = Date.now();
        if (p.done === p.total || now - last >= 2000 || p.done === 1) {
          last = now;
          progress(`images ${p.done}/${p.total}${p.failed > 0 ? ` (${p.failed} failed)` : ''}: ${p.file}`);
        }
      },
    });
    const text = f.json ? JSON.stringify(report) : f.csv ? formatPredictionCsv(report).trimEnd() : formatPredictionTable(report);
    return { report, text };
  } finally {
    predictor.dispose();
  }
}
