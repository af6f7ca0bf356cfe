import { StainNormalizationTarget } from '@histofed/fl-core';
import {
  ContributionRecord,
  FinalReport,
  RoundRecord,
  RunConfig,
  RunPatch,
  RunRecord,
  RunStatus,
  SiteRecord,
  SiteStatus,
  StoredModel,
  EnrollmentToken,
} from './records';

/** Everything the coordinator persists. Services depend on this interface, not on TypeORM. */
export interface CoordinatorStore {
  /** Creates the site (status `initialStatus`) or, for a known site, replaces its keys (status kept). */
  enrollSite(site: Pick<SiteRecord, 'siteId' | 'boxPublicKey' | 'signPublicKey'>, initialStatus: SiteStatus): Promise<SiteRecord>;
  /** An authenticated connection: what the site reports about itself. Null if it is not enrolled. */
  recordHello(siteId: string, info: Pick<SiteRecord, 'backend' | 'software' | 'trainSamples' | 'validationSamples' | 'labelledImages'>): Promise<SiteRecord | null>;
  /** Forgets a site (an administrator resets its identity); its contributions stay. */
  deleteSite(siteId: string): Promise<boolean>;
  getSite(siteId: string): Promise<SiteRecord | null>;
  /** How many sites have this status (the pending-enrollment ceiling). */
  countSites(status: SiteStatus): Promise<number>;
  /** Deletes the sites still pending that enrolled before `before` (expired enrollments); returns their ids. */
  deletePendingSitesEnrolledBefore(before: Date): Promise<string[]>;
  /** Stores (or replaces) the SHA-256 of the enrollment token issued for a site id. */
  putEnrollmentToken(token: EnrollmentToken): Promise<void>;
  getEnrollmentToken(siteId: string): Promise<EnrollmentToken | null>;
  /** Consumes a token (single use); true if there was one. */
  deleteEnrollmentToken(siteId: string): Promise<boolean>;
  listSites(): Promise<SiteRecord[]>;
  setSiteStatus(siteId: string, status: SiteStatus): Promise<SiteRecord | null>;

  createRun(config: RunConfig): Promise<RunRecord>;
  getRun(id: string): Promise<RunRecord | null>;
  listRuns(): Promise<RunRecord[]>;
  /**
   * Records the stain target a run's sites agreed on (a federated stain target): it becomes the
   * run's `config.stainNormalization`; refused (false) when the run already has one.
   */
  setRunStainTarget(id: string, target: StainNormalizationTarget): Promise<boolean>;
  /**
   * `alignmentReference`: feature alignment's reference for the run's next round, written with the
   * round's progress (kept out of RunRecord: up to ~330 KB; read with getAlignmentReference).
   */
  updateRun(id: string, patch: RunPatch): Promise<RunRecord>;
  /** The stored feature-alignment reference of a run (not validated here), or null. */
  getAlignmentReference(id: string): Promise<unknown>;
  listRunsWithStatus(status: RunStatus): Promise<RunRecord[]>;

  saveRound(round: RoundRecord): Promise<void>;
  listRounds(runId: string): Promise<RoundRecord[]>;

  addContribution(c: Omit<ContributionRecord, 'id' | 'receivedAt'>): Promise<ContributionRecord>;
  listContributions(runId: string, round?: number): Promise<ContributionRecord[]>;
  /** Whether a contribution (accepted or rejected) with this nonce was already received from the site. */
  hasContributionNonce(siteId: string, nonce: string): Promise<boolean>;

  /** Content-addressed: storing the same bytes twice keeps one copy. Returns the SHA-256. */
  putModel(bytes: Uint8Array, parameterCount: number): Promise<string>;
  getModel(hash: string): Promise<StoredModel | null>;

  close(): Promise<void>;
}

export type { FinalReport, RunConfig };
