import { join } from 'node:path';
import { DataSource } from 'typeorm';
import { PGliteDriver } from 'typeorm-pglite';
import { ContributionEntity } from './entities/contribution.entity';
import { ModelEntity } from './entities/model.entity';
import { RoundEntity } from './entities/round.entity';
import { RunEntity } from './entities/run.entity';
import { EnrollmentTokenEntity } from './entities/enrollment-token.entity';
import { SiteEntity } from './entities/site.entity';
import { InitialSchema1764200000000 } from './migrations/1764200000000-initial-schema';
import { StrategyState1764300000000 } from './migrations/1764300000000-strategy-state';
import { SiteIdentity1764400000000 } from './migrations/1764400000000-site-identity';
import { ModelBlobStorage1764500000000 } from './migrations/1764500000000-model-blob-storage';
import { EnrollmentTokens1765000000000 } from './migrations/1765000000000-enrollment-tokens';
import { AlignmentReference1765100000000 } from './migrations/1765100000000-alignment-reference';
import { LabelledImages1765200000000 } from './migrations/1765200000000-labelled-images';
import { BoostContributions1765300000000 } from './migrations/1765300000000-boost-contributions';
import { embeddedPostgresOptions, initializeEmbeddedPostgres } from './embedded-postgres';
import { PermissionFixes, ensurePrivateDir, makePrivate } from './private-files';

export const ENTITIES = [SiteEntity, RunEntity, RoundEntity, ContributionEntity, ModelEntity, EnrollmentTokenEntity];
export const MIGRATIONS = [InitialSchema1764200000000, StrategyState1764300000000, SiteIdentity1764400000000, ModelBlobStorage1764500000000, EnrollmentTokens1765000000000, AlignmentReference1765100000000, LabelledImages1765200000000, BoostContributions1765300000000];

export interface DatabaseOptions {
  /** postgres://... for a PostgreSQL server; otherwise embedded PGlite under dataDir/pgdata. */
  readonly databaseUrl?: string;
  readonly dataDir: string;
  /** Embedded database: called with what was made private after it opened (PGlite writes files as 0666). */
  readonly onPermissionsFixed?: (fixes: PermissionFixes) => void;
}

/** Describes where the data lives, for start-up logs (password removed). */
export function describeDatabase(options: DatabaseOptions): string {
  if (options.databaseUrl) return options.databaseUrl.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
  return `pglite:${join(options.dataDir, 'pgdata')}`;
}

/** Opens the database and applies pending migrations (never `synchronize`). */
export async function openDatabase(options: DatabaseOptions): Promise<DataSource> {
  const common = { entities: ENTITIES, migrations: MIGRATIONS, synchronize: false, logging: false } as const;
  let ds: DataSource;
  if (options.databaseUrl) {
    ds = new DataSource({ type: 'postgres', url: options.databaseUrl, ...common });
  } else {
    // The data directory and pgdata are 0700, and every file in them private to this user: PGlite
    // chmods the files of a new database to 0666 whatever the umask, so they are fixed once open.
    ensurePrivateDir(options.dataDir);
    const pgdata = join(options.dataDir, 'pgdata');
    ensurePrivateDir(pgdata);
    await initializeEmbeddedPostgres(pgdata);
    ds = new DataSource({ type: 'postgres', driver: new PGliteDriver(embeddedPostgresOptions(pgdata)).driver, ...common });
  }
  await ds.initialize();
  await ds.runMigrations({ transaction: 'each' });
  if (!options.databaseUrl) {
    const fixes = makePrivate(join(options.dataDir, 'pgdata'));
    if (fixes.files + fixes.directories > 0) options.onPermissionsFixed?.(fixes);
  }
  return ds;
}
