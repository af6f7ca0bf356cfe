import { Inject, Injectable } from '@nestjs/common';
import { join } from 'node:path';
import { BREAKHIS_SUBTYPE_CODES, ModelSpec, STAGE1_CLASSES, StainNormalizationTarget, WeightSet, ensembleMemberKind, snapshotRound } from '@histofed/fl-core';
import { EnsembleCombiner, ModelReading, buildModelAsync, preprocessingFor, saveEnsembleManifest, saveModel, setWeights, tileFeatureExtractor, writeModelReading } from '@histofed/ml';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';

export interface ExportedMember {
  /** 'global', 'global@<site id>' (with the site's local tensors) or a site id (its personalized model). */
  readonly id: string;
  readonly weights: WeightSet;
}

/** How to read the exported models (issue 15): each member's calibration and review rule, and the ensemble's. */
export interface ExportReadings {
  readonly members: ReadonlyMap<string, ModelReading>;
  readonly ensemble?: ModelReading;
}

/**
 * Writes a finished run's models as saved model directories — `global/`, the ensemble's snapshots
 * `global-r<round>/`, one per personalized site, and the ensemble manifest over all of them (with its combiner) — under `<data dir>/models/<run id>/`, where
 * `histofed-coordinator evaluate --model` reads them (a member directory alone, or the run
 * directory as the ensemble).
 */
@Injectable()
export class ModelExporter {
  constructor(@Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig) {}

  runDir(runId: string): string {
    return join(this.config.dataDir, 'models', runId);
  }

  async exportRun(
    runId: string,
    spec: ModelSpec,
    round: number,
    stain: StainNormalizationTarget | null,
    members: readonly ExportedMember[],
    contributors: readonly string[],
    readings?: ExportReadings,
    combine: EnsembleCombiner = 'mean-probabilities',
  ): Promise<string> {
    const dir = this.runDir(runId);
    const subtypes = spec.subtypeParents?.length ?? 0;
    const subtypeClasses =
      subtypes === 0 ? undefined : subtypes === BREAKHIS_SUBTYPE_CODES.length ? [...BREAKHIS_SUBTYPE_CODES] : Array.from({ length: subtypes }, (_, j) => `subtype-${j}`);
    const classes = spec.numClasses === STAGE1_CLASSES.length ? [...STAGE1_CLASSES] : Array.from({ length: spec.numClasses }, (_, c) => `class-${c}`);
    // A backbone model is saved as one tile classifier: the frozen backbone part, then the trained heads.
    const featureModel = spec.backbone ? (await tileFeatureExtractor(spec.backbone, spec.imageSize, { dir: this.config.backboneDir })).model : undefined;
    for (const m of members) {
      const model = await buildModelAsync(spec, 1, { dir: this.config.backboneDir });
      try {
        setWeights(model, m.weights);
        await saveModel(join(dir, m.id), model, {
          classes,
          ...(subtypeClasses ? { subtypeClasses } : {}),
          spec,
          ...(featureModel ? { featureModel } : {}),
          preprocessing: preprocessingFor(spec, stain as Record<string, unknown> | null),
          // 'global@<site>': the global model with that site's local tensors (FedBN).
          // 'global-r<round>': an earlier round's global model (ensemble snapshots, issue 16);
          // 'global-b<k>': a boosted member (trained in the rounds after the run's last, issue 16).
          provenance: ensembleMemberKind(m.id) !== 'personalized'
            ? { kind: 'global', runId, round: snapshotRound(m.id) ?? round, sites: [...contributors] }
            : { kind: 'site', runId, round, sites: [m.id] },
          // Temperature scaling and the review rule fitted with the sites (runs/federated-calibration.ts).
          ...readings?.members.get(m.id),
        });
      } finally {
        model.dispose();
      }
    }
    await saveEnsembleManifest(dir, members.map((m) => m.id), combine);
    if (readings?.ensemble) await writeModelReading(dir, readings.ensemble);
    return dir;
  }
}
