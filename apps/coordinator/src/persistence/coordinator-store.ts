import {
  ContributionRecord,
  FinalReport,
  RoundRecord,
  RunConfig,
  RunRecord,
  RunStatus,
  SiteRecord,
  SiteStatus,
  StoredModel,
} from './records';

/** Everything the coordinator persists. Services depend on this interface, not on TypeORM. */
export interface CoordinatorStore {
  upsertSiteOnHello(site: Omit<SiteRecord, 'firstSeenAt' | 'lastSeenAt' | 'status'>, initialStatus: SiteStatus): Promise<SiteRecord>;
  getSite(siteId: string): Promise<SiteRecord | null>;
  listSites(): Promise<SiteRecord[]>;
  setSiteStatus(siteId: string, status: SiteStatus): Promise<SiteRecord | null>;

  createRun(config: RunConfig): Promise<RunRecord>;
  getRun(id: string): Promise<RunRecord | null>;
  listRuns(): Promise<RunRecord[]>;
  updateRun(
    id: string,
    patch: Partial<Pick<RunRecord, 'status' | 'statusReason' | 'completedRounds' | 'currentModelHash' | 'strategyStateHash' | 'final'>>,
  ): Promise<RunRecord>;
  listRunsWithStatus(status: RunStatus): Promise<RunRecord[]>;

  saveRound(round: RoundRecord): Promise<void>;
  listRounds(runId: string): Promise<RoundRecord[]>;

  addContribution(c: Omit<ContributionRecord, 'id' | 'receivedAt'>): Promise<ContributionRecord>;
  listContributions(runId: string, round?: number): Promise<ContributionRecord[]>;

  /** Content-addressed: storing the same bytes twice keeps one copy. Returns the SHA-256. */
  putModel(bytes: Uint8Array, parameterCount: number): Promise<string>;
  getModel(hash: string): Promise<StoredModel | null>;

  close(): Promise<void>;
}

export type { FinalReport, RunConfig };
