import { randomUUID } from 'node:crypto';
import { types as pgliteTypes } from '@electric-sql/pglite';
import { DataSource, LessThan } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { getPGliteInstance } from 'typeorm-pglite';
import { PGlitePool } from 'typeorm-pglite/dist/pglite-pool';
import { Metrics, StainNormalizationTarget, sha256Hex } from '@histofed/fl-core';
import { CoordinatorStore } from './coordinator-store';
import { ContributionEntity } from './entities/contribution.entity';
import { EnrollmentTokenEntity } from './entities/enrollment-token.entity';
import { ModelEntity } from './entities/model.entity';
import { RoundEntity } from './entities/round.entity';
import { RunEntity } from './entities/run.entity';
import { SiteEntity } from './entities/site.entity';
import {
  ContributionKind,
  ContributionRecord,
  EnrollmentToken,
  FinalReport,
  RoundRecord,
  RoundStatus,
  RunConfig,
  RunPatch,
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

type PGlite = Awaited<ReturnType<typeof getPGliteInstance>>;

/**
 * Model blobs on embedded PGlite bypass TypeORM and PGlite's default bytea handling: PGlite
 * serializes a bytea parameter as a hex string built one byte at a time in JavaScript (about 10 s
 * of CPU and gigabytes of garbage for a 20 MB model) and parses bytea results the same way. A
 * Uint8Array returned by a serializer is sent as a binary-format parameter instead (the bind
 * message carries ArrayBuffer views as raw bytes, format code 1), which PostgreSQL reads with
 * bytea's binary input: the bytes themselves. Results still arrive as hex text; Buffer decodes it
 * natively. node-postgres already converts Buffers natively, so PostgreSQL servers keep TypeORM.
 */
const binaryBytea = {
  // PGlite's bind copies a view out of its buffer; a whole ArrayBuffer it takes as it is.
  [pgliteTypes.BYTEA]: (value: Uint8Array) =>
    (value.buffer instanceof ArrayBuffer && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength
      ? value.buffer
      : value) as unknown as string,
};
const hexBytea = {
  [pgliteTypes.BYTEA]: (text: string): Buffer => {
    if (!text.startsWith('\\x')) throw new Error('expected bytea in hex output format');
    return Buffer.from(text.slice(2), 'hex');
  },
};
const INSERT_MODEL =
  'INSERT INTO models (hash, data, parameter_count, byte_length, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING';

/**
 * A plain Uint8Array owning its memory (offset 0, so float32 views of it are aligned): `bytes`
 * itself when it spans its whole ArrayBuffer, else a copy (drivers may return slices of pooled
 * or larger buffers).
 */
const owned = (bytes: Uint8Array): Uint8Array =>
  bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? new Uint8Array(bytes.buffer) : new Uint8Array(bytes);

/** CoordinatorStore on TypeORM (PGlite or PostgreSQL). Writes are serialized. */
export class TypeOrmCoordinatorStore implements CoordinatorStore {
  private readonly writes = new SerialQueue();

  constructor(private readonly ds: DataSource) {}

  /** The embedded PGlite database behind `ds`, or null on a PostgreSQL server. */
  private async pglite(): Promise<PGlite | null> {
    return (this.ds.driver as PostgresDriver).master instanceof PGlitePool ? getPGliteInstance() : null;
  }

  enrollSite(site: Pick<SiteRecord, 'siteId' | 'boxPublicKey' | 'signPublicKey'>, initialStatus: SiteStatus): Promise<SiteRecord> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(SiteEntity);
      const now = new Date();
      const existing = await repo.findOneBy({ siteId: site.siteId });
      const entity = existing
        ? Object.assign(existing, { boxPublicKey: site.boxPublicKey, signPublicKey: site.signPublicKey, lastSeenAt: now })
        : repo.create({
            ...site,
            status: initialStatus,
            backend: '',
            software: '',
            trainSamples: 0,
            validationSamples: 0,
            labelledImages: 0,
            firstSeenAt: now,
            lastSeenAt: now,
          });
      return toSite(await repo.save(entity));
    });
  }

  recordHello(
    siteId: string,
    info: Pick<SiteRecord, 'backend' | 'software' | 'trainSamples' | 'validationSamples' | 'labelledImages'>,
  ): Promise<SiteRecord | null> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(SiteEntity);
      const e = await repo.findOneBy({ siteId });
      if (!e) return null;
      return toSite(await repo.save(Object.assign(e, info, { lastSeenAt: new Date() })));
    });
  }

  deleteSite(siteId: string): Promise<boolean> {
    return this.writes.run(async () => ((await this.ds.getRepository(SiteEntity).delete({ siteId })).affected ?? 0) > 0);
  }

  async getSite(siteId: string): Promise<SiteRecord | null> {
    const e = await this.ds.getRepository(SiteEntity).findOneBy({ siteId });
    return e ? toSite(e) : null;
  }

  countSites(status: SiteStatus): Promise<number> {
    return this.ds.getRepository(SiteEntity).countBy({ status });
  }

  deletePendingSitesEnrolledBefore(before: Date): Promise<string[]> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(SiteEntity);
      const expired = await repo.find({ where: { status: 'pending', firstSeenAt: LessThan(before) }, select: { siteId: true } });
      if (expired.length > 0) await repo.delete(expired.map((e) => e.siteId));
      return expired.map((e) => e.siteId);
    });
  }

  putEnrollmentToken(token: EnrollmentToken): Promise<void> {
    return this.writes.run(async () => {
      await this.ds.getRepository(EnrollmentTokenEntity).save({ ...token });
    });
  }

  async getEnrollmentToken(siteId: string): Promise<EnrollmentToken | null> {
    const e = await this.ds.getRepository(EnrollmentTokenEntity).findOneBy({ siteId });
    return e ? { siteId: e.siteId, tokenSha256: e.tokenSha256, createdAt: e.createdAt, expiresAt: e.expiresAt } : null;
  }

  deleteEnrollmentToken(siteId: string): Promise<boolean> {
    return this.writes.run(async () => ((await this.ds.getRepository(EnrollmentTokenEntity).delete({ siteId })).affected ?? 0) > 0);
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

  setRunStainTarget(id: string, target: StainNormalizationTarget): Promise<boolean> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(RunEntity);
      const e = await repo.findOneByOrFail({ id });
      const config = e.config as { stainNormalization?: unknown };
      if (config.stainNormalization) return false;
      e.config = { ...config, stainNormalization: target };
      e.updatedAt = new Date();
      await repo.save(e);
      return true;
    });
  }

  updateRun(id: string, patch: RunPatch): Promise<RunRecord> {
    return this.writes.run(async () => {
      const repo = this.ds.getRepository(RunEntity);
      const e = await repo.findOneByOrFail({ id });
      if (patch.status !== undefined) e.status = patch.status;
      if (patch.statusReason !== undefined) e.statusReason = patch.statusReason;
      if (patch.completedRounds !== undefined) e.completedRounds = patch.completedRounds;
      if (patch.currentModelHash !== undefined) e.currentModelHash = patch.currentModelHash;
      if (patch.strategyStateHash !== undefined) e.strategyStateHash = patch.strategyStateHash;
      if (patch.final !== undefined) e.finalReport = patch.final;
      if (patch.alignmentReference !== undefined) e.alignmentReference = patch.alignmentReference;
      if (patch.model !== undefined) e.config = { ...(e.config as object), model: patch.model };
      e.updatedAt = new Date();
      return toRun(await repo.save(e));
    });
  }

  async getAlignmentReference(id: string): Promise<unknown> {
    const e = await this.ds.getRepository(RunEntity).findOne({ where: { id }, select: { id: true, alignmentReference: true } });
    return e?.alignmentReference ?? null;
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

  async hasContributionNonce(siteId: string, nonce: string): Promise<boolean> {
    return this.ds.getRepository(ContributionEntity).exists({ where: { siteId, nonce } });
  }

  putModel(bytes: Uint8Array, parameterCount: number): Promise<string> {
    const hash = sha256Hex(bytes);
    return this.writes.run(async () => {
      // Content-addressed: a blob already stored is not sent to the database again.
      if (await this.ds.getRepository(ModelEntity).exists({ where: { hash } })) return hash;
      const createdAt = new Date();
      const pglite = await this.pglite();
      if (pglite) {
        await pglite.query(INSERT_MODEL, [hash, bytes, parameterCount, bytes.length, createdAt], { serializers: binaryBytea });
      } else {
        await this.ds
          .createQueryBuilder()
          .insert()
          .into(ModelEntity)
          .values({ hash, data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), parameterCount, byteLength: bytes.length, createdAt })
          .orIgnore()
          .execute();
      }
      return hash;
    });
  }

  async getModel(hash: string): Promise<StoredModel | null> {
    const pglite = await this.pglite();
    if (pglite) {
      const { rows } = await pglite.query<{ hash: string; data: Buffer; parameter_count: number }>(
        'SELECT hash, data, parameter_count FROM models WHERE hash = $1',
        [hash],
        { parsers: hexBytea },
      );
      return rows.length ? { hash: rows[0].hash, bytes: owned(rows[0].data), parameterCount: rows[0].parameter_count } : null;
    }
    const e = await this.ds.getRepository(ModelEntity).findOneBy({ hash });
    if (!e) return null;
    // node-postgres returns a Buffer, possibly a slice of a larger one: normalise to an owned copy.
    return { hash: e.hash, bytes: owned(e.data), parameterCount: e.parameterCount };
  }

  async close(): Promise<void> {
    await this.writes.run(async () => undefined);
    if (this.ds.isInitialized) await this.ds.destroy();
  }
}
