import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initializeEmbeddedPostgres } from './embedded-postgres';

describe('embedded PostgreSQL initialization', () => {
  it('creates a new database in a child process once, and leaves an existing one alone', async () => {
    const pgdata = join(mkdtempSync(join(tmpdir(), 'hf-initdb-')), 'pgdata');
    expect(await initializeEmbeddedPostgres(pgdata)).toBe(true);
    expect(existsSync(join(pgdata, 'PG_VERSION'))).toBe(true);
    expect(existsSync(join(pgdata, 'global'))).toBe(true);
    expect(await initializeEmbeddedPostgres(pgdata)).toBe(false);
  }, 120_000);

  it('names the directory when the database cannot be created', async () => {
    const blocker = join(mkdtempSync(join(tmpdir(), 'hf-initdb-')), 'not-a-dir');
    writeFileSync(blocker, 'a file where the data directory should be');
    await expect(initializeEmbeddedPostgres(join(blocker, 'pgdata'))).rejects.toThrow(/could not create the embedded database in .*not-a-dir\/pgdata/);
  }, 120_000);
});
