import { Inject, Injectable } from '@nestjs/common';
import { LabeledImages, Metrics, ModelSpec, StainNormalizationTarget, WeightSet } from '@histofed/fl-core';
import { StainTarget, assertHasImages, createStainNormalizer, loadLabeledImages, readBreakHisTree, simulateFederation } from '@histofed/data';
import { buildModel, ensembleProbabilities, evaluateModelAsync, outputMetrics, setWeights } from '@histofed/ml';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger, LOGGER } from '../logging/json-logger';

export interface EnsembleEvaluation {
  readonly members: Record<string, Metrics>;
  readonly ensemble: Metrics;
}

/**
 * Evaluates models on the coordinator's central test split (patient-wise; the cases held out from
 * every site). The test images are decoded once per input size and kept in memory.
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

  /** The test images at this size, stain-normalized to the run's target (cached per size and target). */
  private testSet(imageSize: number, stain: StainNormalizationTarget | null): Promise<LabeledImages> {
    const key = `${imageSize}/${JSON.stringify(stain)}`;
    let set = this.testSets.get(key);
    if (!set) {
      set = this.loadTestSet(imageSize, stain);
      this.testSets.set(key, set);
      set.catch(() => this.testSets.delete(key));
    }
    return set;
  }

  private async loadTestSet(imageSize: number, stain: StainNormalizationTarget | null): Promise<LabeledImages> {
    const td = this.config.testData!;
    const dataset = assertHasImages(await readBreakHisTree(td.dir));
    const images = td.simulate ? simulateFederation(dataset.images, td.simulate).test : dataset.images;
    this.logger.event('info', 'evaluation', 'central test set loaded', {
      dir: td.dir,
      images: images.length,
      patients: new Set(images.map((i) => i.patientId)).size,
      imageSize,
      stainNormalization: stain?.method ?? null,
    });
    const normalize = stain ? createStainNormalizer(stain as unknown as StainTarget) : undefined;
    return loadLabeledImages(images, imageSize, normalize ? { transform: (rgb) => normalize(rgb) } : {});
  }

  async evaluate(spec: ModelSpec, weights: WeightSet, stain: StainNormalizationTarget | null = null): Promise<Metrics | null> {
    if (!this.enabled) return null;
    const data = await this.testSet(spec.imageSize, stain);
    return (await this.withModel(spec, weights, (model) => evaluateModelAsync(model, data, { subtypeParents: spec.subtypeParents }))).metrics;
  }

  /** Evaluates each member and the mean of their probabilities (the ensemble). */
  async evaluateEnsemble(
    spec: ModelSpec,
    members: { id: string; weights: WeightSet }[],
    stain: StainNormalizationTarget | null = null,
  ): Promise<EnsembleEvaluation | null> {
    if (!this.enabled || members.length === 0) return null;
    const data = await this.testSet(spec.imageSize, stain);
    const probabilities: Float32Array[] = [];
    const perMember: Record<string, Metrics> = {};
    for (const m of members) {
      const r = await this.withModel(spec, m.weights, (model) => evaluateModelAsync(model, data, { subtypeParents: spec.subtypeParents }));
      perMember[m.id] = r.metrics;
      probabilities.push(r.probabilities);
    }
    const ensemble = outputMetrics(data, ensembleProbabilities(probabilities), spec).metrics;
    return { members: perMember, ensemble };
  }

  /** Evaluation yields between batches, so sockets stay responsive while the coordinator evaluates. */
  private async withModel<T>(spec: ModelSpec, weights: WeightSet, use: (model: ReturnType<typeof buildModel>) => Promise<T>): Promise<T> {
    const model = buildModel(spec);
    try {
      setWeights(model, weights);
      return await use(model);
    } finally {
      model.dispose();
    }
  }
}
