import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { PGliteOptions } from '@electric-sql/pglite';

/**
 * Memory of the embedded database (measured, README "Deployment"): PGlite's WebAssembly Postgres
 * grows its memory to what initdb needed (~600 MB) and never gives it back, and its default
 * shared_buffers is 128 MB. HistoFed's tables are small (model blobs are read once per round), so:
 * - a new database is created (initdb) in a short-lived child process, and the coordinator then
 *   opens the existing one (~300 MB less resident memory for the life of the process);
 * - shared_buffers is 16 MB (the operating system's page cache holds the data files anyway).
 */
export const EMBEDDED_POSTGRES_CONF = ['shared_buffers=16MB'];

export function embeddedPostgresOptions(pgdata: string): PGliteOptions {
  return { dataDir: pgdata, postgresqlconf: EMBEDDED_POSTGRES_CONF };
}

const INITDB_SCRIPT = `
const { PGlite } = require(process.argv[1]);
PGlite.create({ dataDir: process.argv[2] })
  .then((db) => db.close())
  .catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });
`;

/** Creates the PGlite database in `pgdata` in a child process, unless it exists already. */
export async function initializeEmbeddedPostgres(pgdata: string): Promise<boolean> {
  if (existsSync(join(pgdata, 'PG_VERSION'))) return false;
  const pglite = require.resolve('@electric-sql/pglite');
  try {
    await promisify(execFile)(process.execPath, ['-e', INITDB_SCRIPT, pglite, pgdata], { maxBuffer: 1024 * 1024, timeout: 300_000 });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr?.trim();
    throw new Error(`could not create the embedded database in ${pgdata}: ${stderr || (e as Error).message}`);
  }
  return true;
}
