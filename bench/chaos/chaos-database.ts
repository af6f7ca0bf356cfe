/**
 * The database bench:chaos runs its coordinator on: a fresh schema in a PostgreSQL server, which it
 * starts the way .ci/run does when the server is local and not running (pg_ctlcluster, as root or
 * the cluster's owner), else the coordinator's embedded PGlite — and the output says which.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { DataSource } from 'typeorm';

export const DEFAULT_DATABASE_URL = 'postgres://histofed:histofed@127.0.0.1:5432/histofed_test';

export type ChaosDatabase =
  | { kind: 'postgresql'; url: string; note: string; drop: () => Promise<void> }
  | { kind: 'pglite'; note: string; drop: () => Promise<void> };

const redact = (url: string) => url.replace(/:[^:@/]*@/, ':***@');

async function tryConnect(url: string): Promise<DataSource | Error> {
  try {
    return await new DataSource({ type: 'postgres', url, connectTimeoutMS: 5000 }).initialize();
  } catch (e) {
    return e as Error;
  }
}

const has = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;

/**
 * As .ci/run: `pg_ctlcluster <newest> main start` (exit 2: already running), wait for pg_isready,
 * and as root create the role and database of the default URL. Returns what happened, or null when
 * nothing could be tried.
 */
function startLocalServer(url: URL, say: (s: string) => void): string | null {
  if (!has('pg_ctlcluster')) return null;
  let versions: string[];
  try {
    versions = readdirSync('/etc/postgresql').filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(a) - Number(b));
  } catch {
    return null;
  }
  const version = versions.at(-1);
  if (!version) return null;
  say(`no PostgreSQL server answers at ${url.host}: starting cluster ${version}/main as .ci/run does`);
  const started = spawnSync('pg_ctlcluster', [version, 'main', 'start'], { encoding: 'utf8' });
  if (started.status === 2) return `cluster ${version}/main was already running`;
  if (started.status !== 0) return `pg_ctlcluster ${version} main start failed: ${(started.stderr || started.stdout).trim()}`;
  for (let i = 0; i < 30 && spawnSync('pg_isready', ['-q', '-h', url.hostname, '-p', url.port || '5432']).status !== 0; i++) {
    spawnSync('sleep', ['1']);
  }
  // The role and database of the default URL, as .ci/run creates them (only root can become postgres).
  if (process.getuid?.() === 0 && url.toString() === new URL(DEFAULT_DATABASE_URL).toString()) {
    spawnSync('su', ['postgres', '-c', 'psql -v ON_ERROR_STOP=1 -q'], {
      input: "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'histofed') THEN CREATE ROLE histofed LOGIN PASSWORD 'histofed'; END IF; END $$;",
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    spawnSync('su', ['postgres', '-c', 'createdb -O histofed histofed_test'], { stdio: 'ignore' });
  }
  return `started cluster ${version}/main`;
}

/**
 * PostgreSQL at `databaseUrl` (started if local and allowed), with a fresh schema that the returned
 * URL makes the search path; PGlite when `forcePglite`, or when no server can be reached.
 */
export async function chaosDatabase(databaseUrl: string, opts: { forcePglite?: boolean; startServer?: boolean }, say: (s: string) => void): Promise<ChaosDatabase> {
  const pglite = (why: string): ChaosDatabase => {
    say(`database: embedded PGlite (${why})`);
    return { kind: 'pglite', note: why, drop: async () => undefined };
  };
  if (opts.forcePglite) return pglite('--pglite given');
  const url = new URL(databaseUrl);
  let client = await tryConnect(databaseUrl);
  let note = `server at ${url.host}`;
  let tried = '';
  if (client instanceof Error && opts.startServer !== false && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
    const started = startLocalServer(url, say);
    if (started) {
      note = `${note}, ${started}`;
      tried = `; ${started}`;
      client = await tryConnect(databaseUrl);
    }
  }
  if (client instanceof Error) return pglite(`no PostgreSQL server at ${redact(databaseUrl)}: ${client.message}${tried}`);
  const schema = `chaos_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  await client.query(`CREATE SCHEMA ${schema}`);
  await client.destroy();
  url.searchParams.set('options', `-c search_path=${schema}`);
  say(`database: PostgreSQL (${note}), schema ${schema}`);
  return {
    kind: 'postgresql',
    url: url.toString(),
    note,
    drop: async () => {
      const c = await tryConnect(databaseUrl);
      if (c instanceof Error) return;
      await c.query(`DROP SCHEMA ${schema} CASCADE`);
      await c.destroy();
    },
  };
}
