import { ClassWeighting, Metrics, ModelSpec, StainNormalizationTarget } from '@histofed/fl-core';

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

/** What an administrator chooses when creating a run. */
export interface RunConfig {
  readonly name: string;
  readonly model: ModelSpec;
  readonly strategy: string;
  /** Options of the strategy (e.g. FedAdam's eta, trimmed mean's trim), validated at creation. */
  readonly strategyOptions?: Readonly<Record<string, number>>;
  readonly rounds: number;
  readonly localEpochs: number;
  readonly batchSize: number;
  readonly learningRate: number;
  readonly proximalMu: number;
  readonly minSites: number;
  readonly maxSites: number;
  /** Seconds a round waits for contributions after sending the task. */
  readonly roundTimeoutSeconds: number;
  /** Seconds to wait for minSites approved sites to be connected before a round starts. */
  readonly waitForSitesSeconds: number;
  /**
   * Once minSites are connected, seconds a round still waits for the other approved sites (a site
   * reconnecting after a restart, of itself or of the coordinator) before it starts without them;
   * 0 starts at once. Absent in runs stored before it existed: 0.
   */
  readonly gatherSeconds?: number;
  /** Reject updates whose L2 distance to the global model exceeds this (0 = no bound). */
  readonly maxUpdateNorm: number;
  /** Local fine-tuning epochs at the end of the run (0 = no personalization, no per-site ensemble). */
  readonly personalizeEpochs: number;
  /** Learning rate of the personalization (fine-tuning) epochs; defaults to learningRate / 10. */
  readonly personalizeLearningRate?: number;
  readonly seed: number;
  /** Stain normalization applied by every site and by the central evaluation (null = none). */
  readonly stainNormalization?: StainNormalizationTarget | null;
  /** Sites augment their training data: tiled models' training views, or whole images (a new seeded draw every round). */
  readonly augment?: boolean;
  /** Class-imbalance handling on the sites (absent in runs stored before it existed: 'none'). */
  readonly classWeighting?: ClassWeighting;
  /** SecAgg+ on (the coordinator sees only sums of updates), or null/absent for sealed per-site updates. */
  readonly secureAggregation?: SecureAggregationConfig | null;
}

export interface SecureAggregationConfig {
  /** k, neighbours per site (default: chosen from the round's size). */
  readonly neighbours?: number;
  /** t, shares needed to unmask (default: a strict majority of the k + 1 holders). */
  readonly threshold?: number;
  readonly clipRange: number;
  readonly stageTimeoutSeconds: number;
}

export type RunStatus = 'created' | 'running' | 'completed' | 'failed';

export interface FinalReport {
  readonly global: Metrics | null;
  readonly perSite: Record<string, Metrics | null>;
  readonly ensemble: Metrics | null;
  readonly ensembleMembers: string[];
  /** Where the run's saved models (global, per site, ensemble manifest) were written. */
  readonly modelsDir?: string;
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

export type ContributionKind = 'round' | 'personalize';
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
