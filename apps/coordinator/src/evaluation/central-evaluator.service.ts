import { Inject, Injectable } from '@nestjs/common';
import { join } from 'node:path';
import { LabeledImages, Metrics, ModelSpec, StainNormalizationTarget, WeightSet } from '@histofed/fl-core';
import {
  FeatureCache,
  StainTarget,
  assertHasImages,
  createStainNormalizer,
  loadModelInputs,
  readBreakHisTree,
  readClinicalCsv,
  simulateFederation,
  modelInputsKey,
} from '@histofed/data';
import { EnsembleCombiner, buildModelAsync, combineMembers, evaluateModelAsync, imageLevel, outputMetrics, setWeights, tileFeatureExtractor } from '@histofed/ml';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger, LOGGER } from '../logging/json-logger';

/**
 * A model's confusion matrices on the central test set (rows: true class, columns: predicted),
 * stage 1 and, for a two-stage model, the subtypes (the cascade's prediction).
 */
export interface ConfusionSummary {
  readonly images: number;
  readonly stage1: number[][];
  readonly subtype?: number[][];
}

/** The confusion matrices of an evaluation report (libs/ml StagedReport). */
export function confusionOf(report: { readonly images: number; readonly stage1: { readonly confusion: number[][] }; readonly stage2?: { readonly confusion: number[][] } }): ConfusionSummary {
  return { images: report.images, stage1: report.stage1.confusion, ...(report.stage2 ? { subtype: report.stage2.confusion } : {}) };
}

/**
 * The confusion matrices a final report keeps: every member's, and the ensemble's unless a fitted
 * combiner (weighted mean, stacking) replaced the plain mean they were computed with.
 */
export function finalConfusion(confusion: Readonly<Record<string, ConfusionSummary>>, fittedCombiner: boolean): Record<string, ConfusionSummary> {
  return Object.fromEntries(Object.entries(confusion).filter(([id]) => !(fittedCombiner && id === 'ensemble')));
}

export interface EnsembleEvaluation {
  readonly members: Record<string, Metrics>;
  readonly ensemble: Metrics;
  /** Confusion matrices of each member and of the ensemble ('ensemble'), for the final report. */
  readonly confusion: Record<string, ConfusionSummary>;
  /** Each member's image-level output rows on the test set (images x output width), for calibration measures. */
  readonly probabilities: Record<string, Float32Array>;
  /** The test images' stage-1 labels, in the rows' order. */
  readonly labels: Int32Array;
}

/**
 * Evaluates models on the coordinator's central test split (patient-wise; the cases held out from
 * every site). What the models read (whole images, or a frozen backbone's tile features of the
 * covering grid, cached on disk under `<data dir>/cache/features`) is computed once per spec and
 * kept in memory.
 */
@Injectable()
export class CentralEvaluator {
  constructor(
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    @Inject(LOGGER) private readonly logger: JsonLogger,
  ) {}

  get enabled(): boolean {
    return this.config.testData !== undefined;
  }

  private readonly testSets = new Map<string, Promise<LabeledImages>>();

  private featureCacheInstance: FeatureCache | undefined;

  private get featureCache(): FeatureCache {
    this.featureCacheInstance ??= new FeatureCache({ dir: join(this.config.dataDir, 'cache', 'features') });
    return this.featureCacheInstance;
  }

  /** What a model of `spec` reads from the test images, stain-normalized to the run's target (kept per spec and target). */
  private testSet(spec: ModelSpec, stain: StainNormalizationTarget | null): Promise<LabeledImages> {
    const key = JSON.stringify([...modelInputsKey(spec), spec.backbone ?? null, stain]);
    let set = this.testSets.get(key);
    if (!set) {
      set = this.loadTestSet(spec, stain);
      this.testSets.set(key, set);
      set.catch(() => this.testSets.delete(key));
    }
    return set;
  }

  private async loadTestSet(spec: ModelSpec, stain: StainNormalizationTarget | null): Promise<LabeledImages> {
    const td = this.config.testData!;
    const dataset = assertHasImages(await readBreakHisTree(td.dir));
    const images = td.simulate ? simulateFederation(dataset.images, td.simulate).test : dataset.images;
    this.logger.event('info', 'evaluation', 'central test set loaded', {
      dir: td.dir,
      images: images.length,
      patients: new Set(images.map((i) => i.patientId)).size,
      imageSize: spec.imageSize,
      tiles: spec.tiles ?? null,
      backbone: spec.backbone ? `${spec.backbone.name} ${spec.backbone.cut}` : null,
      stainNormalization: stain?.method ?? null,
    });
    const normalize = stain ? createStainNormalizer(stain as unknown as StainTarget) : undefined;
    const extractor = spec.backbone && spec.tiles ? await tileFeatureExtractor(spec.backbone, spec.imageSize, { dir: this.config.backboneDir }) : undefined;
    const started = Date.now();
    let last = 0;
    const clinicalCsv = this.config.testData?.clinicalCsv;
    const clinical = spec.clinical && clinicalCsv ? await readClinicalCsv(clinicalCsv, spec.clinical) : undefined;
    if (spec.clinical) {
      const withRecord = new Set(images.map((i) => i.patientId).filter((p) => clinical?.records.has(p))).size;
      this.logger.event('info', 'evaluation', 'central test clinical records', { table: clinicalCsv ?? null, patientsWithRecord: withRecord, patients: new Set(images.map((i) => i.patientId)).size });
    }
    const data = await loadModelInputs(images, spec, {
      clinical,
      extractor,
      featureCache: this.featureCache,
      transform: normalize ? { key: JSON.stringify(stain), apply: (rgb) => normalize(rgb) } : undefined,
      onProgress: (p) => {
        if (p.images === p.total || Date.now() - last > 5000) {
          last = Date.now();
          this.logger.event('info', 'evaluation', 'central test tiles', { ...p, seconds: (Date.now() - started) / 1000 });
        }
      },
    });
    return data;
  }

  async evaluate(spec: ModelSpec, weights: WeightSet, stain: StainNormalizationTarget | null = null): Promise<Metrics | null> {
    if (!this.enabled) return null;
    const data = await this.testSet(spec, stain);
    return (await this.withModel(spec, weights, (model) => evaluateModelAsync(model, data, { subtypeParents: spec.subtypeParents }))).metrics;
  }

  /** Evaluates each member and the ensemble: their rows combined by `combine` (libs/ml combineMembers; default the mean). */
  async evaluateEnsemble(
    spec: ModelSpec,
    members: { id: string; weights: WeightSet }[],
    stain: StainNormalizationTarget | null = null,
    combine: EnsembleCombiner = 'mean-probabilities',
  ): Promise<EnsembleEvaluation | null> {
    if (!this.enabled || members.length === 0) return null;
    const data = await this.testSet(spec, stain);
    const probabilities: Float32Array[] = [];
    const perMember: Record<string, Metrics> = {};
    const rows: Record<string, Float32Array> = {};
    const confusion: Record<string, ConfusionSummary> = {};
    for (const m of members) {
      const r = await this.withModel(spec, m.weights, (model) => evaluateModelAsync(model, data, { subtypeParents: spec.subtypeParents }));
      perMember[m.id] = r.metrics;
      probabilities.push(r.probabilities);
      rows[m.id] = r.probabilities;
      confusion[m.id] = confusionOf(r.report);
    }
    const combined = outputMetrics(data, combineMembers(probabilities, spec, combine), spec);
    confusion['ensemble'] = confusionOf(combined.report);
    return { members: perMember, ensemble: combined.metrics, confusion, probabilities: rows, labels: imageLevel(data).labels };
  }

  /**
   * The metrics of members' test rows (as evaluateEnsemble returned them, in `order`) combined by
   * `combine`: another combiner of the same members, without running the models again.
   */
  async combinedMetrics(
    spec: ModelSpec,
    stain: StainNormalizationTarget | null,
    probabilities: Readonly<Record<string, Float32Array>>,
    order: readonly string[],
    combine: EnsembleCombiner,
  ): Promise<Metrics | null> {
    if (!this.enabled) return null;
    const data = await this.testSet(spec, stain);
    return outputMetrics(data, combineMembers(order.map((id) => probabilities[id]), spec, combine), spec).metrics;
  }

  /** Evaluation yields between batches, so sockets stay responsive while the coordinator evaluates. */
  private async withModel<T>(spec: ModelSpec, weights: WeightSet, use: (model: Awaited<ReturnType<typeof buildModelAsync>>) => Promise<T>): Promise<T> {
    const model = await buildModelAsync(spec, 1, { dir: this.config.backboneDir });
    try {
      setWeights(model, weights);
      return await use(model);
    } finally {
      model.dispose();
    }
  }
}
