/**
 * Central prediction (`POST /api/predict`): a finished run's saved model or ensemble classifies one
 * uploaded image, with the same code as `histofed-site predict` (libs/inference). One prediction
 * at a time (a queue: CPU and memory stay bounded whatever the number of requests); the last few
 * loaded models stay in memory.
 */
import { Inject, Injectable, OnApplicationShutdown } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FeatureCache } from '@histofed/data';
import { Predictor, predictImages, type PredictionReport } from '@histofed/inference';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { ModelExporter } from '../evaluation/model-exporter.service';
import { SerialQueue } from '../persistence/serial-queue';

/** Largest image accepted by POST /api/predict (bytes). */
export const PREDICT_MAX_BYTES = 32 * 1024 * 1024;
/** Loaded models kept for the next request. */
const KEPT_PREDICTORS = 2;

export interface PredictRequest {
  readonly runId: string;
  /** 'ensemble' (the run's directory), 'global', 'global@<site>' or a site's personalized model. */
  readonly model: string;
  readonly image: Buffer;
  readonly mcDropoutPasses: number;
  readonly seed: number;
}

export class ModelNotFound extends Error {}

@Injectable()
export class PredictionService implements OnApplicationShutdown {
  private readonly queue = new SerialQueue();
  private readonly predictors = new Map<string, Predictor>();
  private featureCache?: FeatureCache;

  constructor(
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    private readonly exporter: ModelExporter,
  ) {}

  /** The directory of a run's saved model, or throws ModelNotFound. */
  modelDir(runId: string, model: string): string {
    const runDir = this.exporter.runDir(runId);
    const dir = model === 'ensemble' ? runDir : join(runDir, model);
    const manifest = model === 'ensemble' ? 'histofed-ensemble.json' : 'histofed-model.json';
    if (!existsSync(join(dir, manifest))) throw new ModelNotFound(`run ${runId} has no saved model "${model}" (a finished run saves ensemble, global and one per personalized site)`);
    return dir;
  }

  predict(r: PredictRequest): Promise<PredictionReport> {
    const dir = this.modelDir(r.runId, r.model);
    return this.queue.run(async () => {
      const predictor = await this.predictorFor(dir, r.mcDropoutPasses, r.seed);
      const tmp = join(this.config.dataDir, 'tmp');
      await mkdir(tmp, { recursive: true, mode: 0o700 });
      const file = join(tmp, `predict-${randomUUID()}`);
      await writeFile(file, r.image, { mode: 0o600 });
      try {
        const report = await predictImages(predictor, [file]);
        // The temporary name means nothing to the caller.
        return {
          ...report,
          images: report.images.map((im) => ({ ...im, file: 'upload' })),
          failures: report.failures.map((f) => ({ ...f, file: 'upload', reason: f.reason.split(file).join('upload') })),
        };
      } finally {
        await rm(file, { force: true });
      }
    });
  }

  private async predictorFor(dir: string, passes: number, seed: number): Promise<Predictor> {
    const key = JSON.stringify([dir, passes, seed]);
    const have = this.predictors.get(key);
    if (have) {
      // Most recently used last.
      this.predictors.delete(key);
      this.predictors.set(key, have);
      return have;
    }
    this.featureCache ??= new FeatureCache({ dir: join(this.config.dataDir, 'cache', 'features') });
    const p = await Predictor.load(dir, { backboneDir: this.config.backboneDir, featureCache: this.featureCache, mcDropoutPasses: passes, mcDropoutSeed: seed });
    this.predictors.set(key, p);
    while (this.predictors.size > KEPT_PREDICTORS) {
      const [oldest, old] = this.predictors.entries().next().value as [string, Predictor];
      this.predictors.delete(oldest);
      old.dispose();
    }
    return p;
  }

  onApplicationShutdown(): void {
    for (const p of this.predictors.values()) p.dispose();
    this.predictors.clear();
  }
}
