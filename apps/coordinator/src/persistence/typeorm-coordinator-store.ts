import { randomUUID } from 'node:crypto';
import { DataSource } from 'typeorm';
import { Metrics, sha256Hex } from '@histofed/fl-core';
import { CoordinatorStore } from './coordinator-store';
import { ContributionEntity } from './entities/contribution.entity';
import { ModelEntity } from './entities/model.entity';
import { RoundEntity } from './entities/round.entity';
import { RunEntity } from './entities/run.entity';
import { SiteEntity } from './entities/site.entity';
import {
  ContributionKind,
  ContributionRecord,
  FinalReport,
  RoundRecord,
  RoundStatus,
  RunConfig,
  RunRecord,
  RunStatus,
  SiteRecord,
  SiteStatus,
  StoredModel,
} from './records';
import { SerialQueue } from './serial-queue';

const toSite = (e: SiteEntity): SiteRecord => ({ ...e, status: e.status as SiteStatus });
const toRun = (e: RunEntity): RunRecord => ({
  id: e.id,
  status: e.status as RunStatus,
  statusReason: e.statusReason,
  config: e.config as RunConfig,
  completedRounds: e.completedRounds,
  currentModelHash: e.currentModelHash,
  strategyStateHash: e.strategyStateHash ?? null,
  final: e.finalReport as FinalReport | null,
  createdAt: e.createdAt,
  updatedAt: e.updatedAt,
});
const toRound = (e: RoundEntity): RoundRecord => ({
  ...e,
  status: e.status as RoundStatus,
  siteMetrics: e.siteMetrics as Metrics | null,
  centralMetrics: e.centralMetrics as Metrics | null,
});
const toContribution = (e: ContributionEntity): ContributionRecord => ({
  ...e,
  kind: e.kind as ContributionKind,
  status: e.status as 'accepted' | 'rejected',
  metrics: e.metrics as Metrics | null,
});

/** CoordinatorStore on TypeORM (PGlite or PostgreSQL). Writes are serialized. */
export class TypeOrmCoordinatorStore implements CoordinatorStore {
  private readonly writes = new SerialQueue();

  constructor(private readonly ds: DataSource) {}

  upsertSiteOnHello(
    site: Omit<SiteRecord, 'firstSeenAt' | 'lastSeenAt' | 'status'>,
    initialStatus: SiteStatus,
  ): Promise<SiteRecord> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(SiteEntity);
      const now = new Date();
      const existing = await repo.findOneBy({ siteId: site.siteId });
      const entity = repo.create({
        ...site,
        status: existing?.status ?? initialStatus,
        firstSeenAt: existing?.firstSeenAt ?? now,
        lastSeenAt: now,
      });
      return toSite(await repo.save(entity));
    });
  }

  async getSite(siteId: string): Promise<SiteRecord | null> {
    const e = await this.ds.getRepository(SiteEntity).findOneBy({ siteId });
    return e ? toSite(e) : null;
  }

  async listSites(): Promise<SiteRecord[]> {
    return (await this.ds.getRepository(SiteEntity).find({ order: { siteId: 'ASC' } })).map(toSite);
  }

  setSiteStatus(siteId: string, status: SiteStatus): Promise<SiteRecord | null> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(SiteEntity);
      const e = await repo.findOneBy({ siteId });
      if (!e) return null;
      e.status = status;
      return toSite(await repo.save(e));
    });
  }

  createRun(config: RunConfig): Promise<RunRecord> {
    return this.writes.run(async () => {
      const now = new Date();
      const repo = this.ds.getRepository(RunEntity);
      const e = repo.create({
        id: randomUUID(),
        status: 'created',
        statusReason: null,
        config,
        completedRounds: 0,
        currentModelHash: null,
        strategyStateHash: null,
        finalReport: null,
        createdAt: now,
        updatedAt: now,
      });
      return toRun(await repo.save(e));
    });
  }

  async getRun(id: string): Promise<RunRecord | null> {
    const e = await this.ds.getRepository(RunEntity).findOneBy({ id });
    return e ? toRun(e) : null;
  }

  async listRuns(): Promise<RunRecord[]> {
    return (await this.ds.getRepository(RunEntity).find({ order: { createdAt: 'ASC' } })).map(toRun);
  }

  async listRunsWithStatus(status: RunStatus): Promise<RunRecord[]> {
    return (await this.ds.getRepository(RunEntity).find({ where: { status }, order: { createdAt: 'ASC' } })).map(toRun);
  }

  updateRun(
    id: string,
    patch: Partial<Pick<RunRecord, 'status' | 'statusReason' | 'completedRounds' | 'currentModelHash' | 'strategyStateHash' | 'final'>>,
  ): Promise<RunRecord> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(RunEntity);
      const e = await repo.findOneByOrFail({ id });
      if (patch.status !== undefined) e.status = patch.status;
      if (patch.statusReason !== undefined) e.statusReason = patch.statusReason;
      if (patch.completedRounds !== undefined) e.completedRounds = patch.completedRounds;
      if (patch.currentModelHash !== undefined) e.currentModelHash = patch.currentModelHash;
      if (patch.strategyStateHash !== undefined) e.strategyStateHash = patch.strategyStateHash;
      if (patch.final !== undefined) e.finalReport = patch.final;
      e.updatedAt = new Date();
      return toRun(await repo.save(e));
    });
  }

  saveRound(round: RoundRecord): Promise<void> {
    return this.writes.run(async () => {
      await this.ds.getRepository(RoundEntity).save(this.ds.getRepository(RoundEntity).create(round));
    });
  }

  async listRounds(runId: string): Promise<RoundRecord[]> {
    return (await this.ds.getRepository(RoundEntity).find({ where: { runId }, order: { round: 'ASC' } })).map(toRound);
  }

  addContribution(c: Omit<ContributionRecord, 'id' | 'receivedAt'>): Promise<ContributionRecord> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(ContributionEntity);
      return toContribution(await repo.save(repo.create({ ...c, id: randomUUID(), receivedAt: new Date() })));
    });
  }

  async listContributions(runId: string, round?: number): Promise<ContributionRecord[]> {
    const where = round === undefined ? { runId } : { runId, round };
    return (
      await this.ds.getRepository(ContributionEntity).find({ where, order: { round: 'ASC', receivedAt: 'ASC' } })
    ).map(toContribution);
  }

  putModel(bytes: Uint8Array, parameterCount: number): Promise<string> {
    const hash = sha256Hex(bytes);
    return this.writes.run(async () => {
      await this.ds
        .createQueryBuilder()
        .insert()
        .into(ModelEntity)
        .values({ hash, data: Buffer.from(bytes), parameterCount, byteLength: bytes.length, createdAt: new Date() })
        .orIgnore()
        .execute();
      return hash;
    });
  }

  async getModel(hash: string): Promise<StoredModel | null> {
    const e = await this.ds.getRepository(ModelEntity).findOneBy({ hash });
    if (!e) return null;
    // PGlite returns Uint8Array, node-postgres a Buffer: normalise to an aligned copy.
    return { hash: e.hash, bytes: new Uint8Array(e.data), parameterCount: e.parameterCount };
  }

  async close(): Promise<void> {
    await this.writes.run(async () => undefined);
    if (this.ds.isInitialized) await this.ds.destroy();
  }
}
