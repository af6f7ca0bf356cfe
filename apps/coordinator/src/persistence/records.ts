import type { Metrics } from '@histofed/fl-core';
import type { Expect, FeatureMomentsWire, MutuallyAssignable, SameKeys } from '@histofed/protocol';
import type { RunConfigOutput } from '../admin/run-config.schema';

/** Plain records the services work with. The TypeORM entities stay inside persistence/. */

export type SiteStatus = 'pending' | 'approved' | 'revoked';
export interface SiteRecord {
  readonly siteId: string;
  readonly boxPublicKey: string;
  /** Ed25519 public key (base64); null for a site enrolled before identities existed (it must enroll again). */
  readonly signPublicKey: string | null;
  readonly status: SiteStatus;
  readonly backend: string;
  readonly software: string;
  readonly trainSamples: number;
  readonly validationSamples: number;
  /** Active learning: images the site's pathologists labelled, as its last hello said (a count only; 0 before any). */
  readonly labelledImages: number;
  readonly firstSeenAt: Date;
  readonly lastSeenAt: Date;
}

/** An enrollment token issued by an administrator for a site id (only its hash is stored). */
export interface EnrollmentToken {
  readonly siteId: string;
  readonly tokenSha256: string;
  readonly createdAt: Date;
  readonly expiresAt: Date;
}

/**
 * The fields added to the run configuration after runs were first stored: rows written before
 * them lack the field, so the record has them optional (readers apply the old behaviour:
 * gatherSeconds 0, no stain normalization, no augmentation, classWeighting 'none', no secure
 * aggregation, localTensors 'none', no federated stain target, no calibration, no ensemble snapshots,
 * kind 'classify' without startFrom).
 */
type AddedAfterFirstRuns =
  | 'gatherSeconds'
  | 'stainNormalization'
  | 'augment'
  | 'classWeighting'
  | 'patientWeighting'
  | 'secureAggregation'
  | 'localTensors'
  | 'federatedStainTarget'
  | 'stainAugmentation'
  | 'alignment'
  | 'calibration'
  | 'ensemble'
  | 'pruning'
  | 'kind'
  | 'pretrain'
  | 'startFrom';

/**
 * What an administrator chose when creating a run: the validated output of the run-config schema
 * (admin/run-config.schema.ts, where each field is documented), as stored and read back. Derived,
 * so a field added to the schema is a field of the record.
 */
export type RunConfig = Readonly<Omit<RunConfigOutput, AddedAfterFirstRuns> & Partial<Pick<RunConfigOutput, AddedAfterFirstRuns>>>;

/** SecAgg+ settings of a run (RunConfig.secureAggregation). */
export type SecureAggregationConfig = Readonly<NonNullable<RunConfigOutput['secureAggregation']>>;

/**
 * Guards the derivation (should RunConfig ever be written out as an interface again): a run the
 * schema accepts can be stored, the record's other fields are the schema's, and it names exactly
 * the schema's fields.
 */
export type RunConfigStoresSchemaOutput = Expect<[RunConfigOutput] extends [RunConfig] ? true : false>;
export type RunConfigAgreesWithSchema = Expect<MutuallyAssignable<Omit<RunConfig, AddedAfterFirstRuns>, Omit<RunConfigOutput, AddedAfterFirstRuns>>>;
export type RunConfigHasSchemaFields = Expect<SameKeys<RunConfig, RunConfigOutput>>;

export type RunStatus = 'created' | 'running' | 'completed' | 'failed';

export interface FinalReport {
  readonly global: Metrics | null;
  readonly perSite: Record<string, Metrics | null>;
  readonly ensemble: Metrics | null;
  readonly ensembleMembers: string[];
  /** Where the run's saved models (global, per site, ensemble manifest) were written. */
  readonly modelsDir?: string;
  /** Temperature scaling fitted with the sites, and ECE before/after (runs with calibration; runs/federated-calibration.ts). */
  readonly calibration?: CalibrationSummary;
  /** The review rule chosen on the sites' validation images (runs with a review rate). */
  readonly review?: ReviewSummary;
  /** The ensemble's weighted mean fitted with the sites (runs with ensemble.combiner 'weighted'; runs/federated-ensemble-fit.ts). */
  readonly ensembleFit?: EnsembleFitSummary;
  /**
   * Issue 17: confusion matrices on the central test set (rows true, columns predicted) of each
   * ensemble member and of the ensemble ('ensemble'), for the dashboard's heat maps. Runs before it have none.
   */
  readonly confusion?: Record<string, ConfusionMatricesSummary>;
  /**
   * Issue 17: each ensemble member's metrics on the central test set (before its temperature), by
   * member id: 'global' or 'global@<site>', 'global-r<round>', 'global-b<k>' and the personalized
   * models. Runs before it have none (their global and per-site figures are `global` and `perSite`).
   */
  readonly memberMetrics?: Record<string, Metrics>;
  /** Issue 19: a pretrain run's result, the encoder a classification run's startFrom names (runs/pretrained-encoder.ts). */
  readonly encoder?: EncoderSummary;
}

/** FinalReport.encoder: the pretrained encoder, stored content-addressed (GET /api/models/:sha256). */
export interface EncoderSummary {
  /** SHA-256 of the encoder's tensors (libs/ml encoderHash): its address in the model store. */
  readonly sha256: string;
  readonly parameters: number;
  readonly tensors: number;
  /** The sites' mean contrastive (NT-Xent) loss in the last round, or null. */
  readonly contrastiveLoss: number | null;
}

/** FinalReport.confusion: stage 1 (benign, malignant) and, for a two-stage model, the subtypes (the cascade's prediction). */
export interface ConfusionMatricesSummary {
  readonly images: number;
  readonly stage1: number[][];
  readonly subtype?: number[][];
}

/** FinalReport.ensembleFit: the combiner fitted on the sites' validation images (weights or a stacking meta-learner), and what it gains there. */
export type EnsembleFitSummary = WeightedEnsembleFitSummary | StackingEnsembleFitSummary;

/** The weights chosen on the sites' validation images (ensemble.combiner 'weighted'; runs/federated-ensemble-fit.ts). */
export interface WeightedEnsembleFitSummary {
  /** 'weighted-mean' when a weighting was chosen; 'mean-probabilities' when no site's answer could be used (the run keeps the mean). */
  readonly combiner: 'weighted-mean' | 'mean-probabilities';
  /** The weight of every ensemble member (sums to 1), as stored in the ensemble manifest. */
  readonly weights: Record<string, number>;
  /** The members whose weights were fitted (every site holds them); the others keep the mean's share 1/M each. */
  readonly fittedMembers: string[];
  readonly candidates: number;
  /** Mean stage-1 NLL per validation image (the sites' pooled images) of the fitted members' unweighted and chosen weighted mean. */
  readonly validation: { readonly images: number; readonly meanNll: number | null; readonly weightedNll: number | null };
  /** The central test set's ensemble with the unweighted mean (final.ensemble is the run's combiner). */
  readonly centralMean?: Metrics | null;
  readonly sites: { readonly answered: string[]; readonly refused: Record<string, string> };
}

/** The stacking meta-learner fitted with the sites (ensemble.combiner 'stacking'; runs/federated-stacking-fit.ts). */
export interface StackingEnsembleFitSummary {
  /** 'stacking' when the stage-1 head was fitted; 'mean-probabilities' when no site answered its first step (the run keeps the mean). */
  readonly combiner: 'stacking' | 'mean-probabilities';
  /** The members whose log-probabilities the heads read (all of the ensemble's: every site holds them). */
  readonly fittedMembers: string[];
  /** Each head's fit; subtype null: no site answered its first step (the subtype block stays the members' mean). */
  readonly stacking: { readonly iterations: number; readonly stage1: StackingHeadFitSummary | null; readonly subtype?: StackingHeadFitSummary | null };
  /** The central test set's ensemble with the unweighted mean (final.ensemble is the run's combiner). */
  readonly centralMean?: Metrics | null;
  /** Sites whose gradients were summed to the end, and why the others were dropped (at which head and step). */
  readonly sites: { readonly answered: string[]; readonly refused: Record<string, string> };
}

/** One stacked head's federated fit. */
export interface StackingHeadFitSummary {
  /** Gradient steps taken (at most the run's stackingIterations). */
  readonly steps: number;
  /** True when it stopped early: the summed gradient's norm per image fell below the tolerance. */
  readonly converged: boolean;
  /** Validation images counted at the end (the sites that answered every step). */
  readonly images: number;
  /** Mean NLL per validation image of the start (the members' mean of log-probabilities) and of the fitted head (the last step's answers). */
  readonly startNll: number;
  readonly fittedNll: number;
  /** The sites whose gradients were summed up to the end. */
  readonly sites: string[];
}

/** Stage-1 reliability table bin (libs/ml ReliabilityBin). */
export interface ReliabilityBinSummary {
  readonly lower: number;
  readonly upper: number;
  readonly count: number;
  readonly confidence: number | null;
  readonly accuracy: number | null;
}

/** FinalReport.calibration: stage-1 ECE (10 bins) before and after temperature scaling. */
export interface CalibrationSummary {
  readonly global: {
    /** The temperatures every global member carries (null: no site answered). */
    readonly temperature: { readonly stage1: number; readonly subtype?: number } | null;
    /** On the central test set (never used for fitting); null without a central test set. */
    readonly eceBefore: number | null;
    readonly eceAfter: number | null;
    readonly reliabilityBefore?: ReliabilityBinSummary[];
    readonly reliabilityAfter?: ReliabilityBinSummary[];
    /** On the sites' pooled validation images (what the temperature was fitted on). */
    readonly validation: { readonly images: number; readonly eceBefore: number | null; readonly eceAfter: number | null };
    /** Per site, on its own validation images (from its reports). */
    readonly perSite: Record<string, { readonly eceBefore: number | null; readonly eceAfter: number | null }>;
  };
  /** Each personalized model, fitted and measured on its own site's validation images. */
  readonly personalized: Record<string, { readonly temperature: { readonly stage1: number; readonly subtype?: number }; readonly eceBefore: number | null; readonly eceAfter: number | null }>;
  /** Sites whose answers were used, and why others were left out. */
  readonly sites: { readonly answered: string[]; readonly refused: Record<string, string> };
}

/** What a review threshold does on the validation images it was chosen on. */
export interface ReviewChoiceSummary {
  readonly threshold: number;
  readonly images: number;
  /** The share of those images it flags (the target, as close as the histogram's 0.01 bins allow). */
  readonly reviewRate: number;
  readonly accuracyAll: number;
  readonly accuracyUnflagged: number | null;
}

/** FinalReport.review: the rule stored in the saved models (entropy of the calibrated stage-1 output >= threshold). */
export interface ReviewSummary {
  readonly measure: 'entropy';
  readonly targetReviewRate: number;
  readonly global: ReviewChoiceSummary | null;
  readonly personalized: Record<string, ReviewChoiceSummary>;
}

export interface RunRecord {
  readonly id: string;
  readonly status: RunStatus;
  readonly statusReason: string | null;
  readonly config: RunConfig;
  readonly completedRounds: number;
  readonly currentModelHash: string | null;
  /** The aggregation strategy's state after the last completed round (FedAdam/FedYogi moments), or null. */
  readonly strategyStateHash: string | null;
  readonly final: FinalReport | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/**
 * What updateRun may change; `alignmentReference` is stored with the run but not part of RunRecord;
 * `model` replaces the run's `config.model` (a pruning step: the smaller model the rounds go on with).
 */
export type RunPatch = Partial<Pick<RunRecord, 'status' | 'statusReason' | 'completedRounds' | 'currentModelHash' | 'strategyStateHash' | 'final'>> & {
  readonly alignmentReference?: FeatureMomentsWire | null;
  readonly model?: RunConfig['model'];
};

export type RoundStatus = 'training' | 'completed' | 'failed';
export interface RoundRecord {
  readonly runId: string;
  readonly round: number;
  readonly status: RoundStatus;
  readonly participants: string[];
  readonly baseModelHash: string;
  readonly modelHash: string | null;
  /** Sample-weighted mean of the sites' local validation metrics. */
  readonly siteMetrics: Metrics | null;
  /** The new global model on the coordinator's central test split. */
  readonly centralMetrics: Metrics | null;
  readonly reason: string | null;
  readonly startedAt: Date;
  readonly completedAt: Date | null;
}

export type ContributionKind = 'round' | 'personalize' | 'boost';
export interface ContributionRecord {
  readonly id: string;
  readonly runId: string;
  readonly round: number;
  readonly kind: ContributionKind;
  readonly siteId: string;
  readonly status: 'accepted' | 'rejected';
  readonly reason: string | null;
  readonly numSamples: number | null;
  readonly metrics: Metrics | null;
  readonly modelHash: string | null;
  readonly bytes: number;
  /** The contribution's nonce (a nonce is accepted once per site, ever: replay protection). */
  readonly nonce: string | null;
  readonly receivedAt: Date;
}

export interface StoredModel {
  readonly hash: string;
  readonly bytes: Uint8Array;
  readonly parameterCount: number;
}
