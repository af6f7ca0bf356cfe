/**
 * Starts a real coordinator process for the round benchmark. A few lines copied from
 * scripts/lib/processes.ts (bench projects may only import libs, see the eslint module boundaries).
 */
import { ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');
const COORDINATOR_BIN = path.join(ROOT, 'apps', 'coordinator', 'bin', 'histofed-coordinator.js');

export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => ok(port));
    });
  });
}

export interface CoordinatorProcess {
  readonly url: string;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

/** `histofed-coordinator serve` on a free port, embedded PGlite in `dataDir`, sites auto-approved, no test data. */
export async function startCoordinator(o: {
  dataDir: string;
  logFile: string;
  token: string;
  maxMessageBytes: number;
  timeoutMs?: number;
}): Promise<CoordinatorProcess> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, HISTOFED_MAX_MESSAGE_BYTES: String(o.maxMessageBytes) };
  delete env['DATABASE_URL'];
  delete env['HISTOFED_TEST_DATA'];
  const child = spawn(
    process.execPath,
    [COORDINATOR_BIN, 'serve', '--host', '127.0.0.1', '--port', String(port), '--data-dir', o.dataDir, '--admin-token', o.token, '--auto-approve'],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log = createWriteStream(o.logFile, { flags: 'a' });
  const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
  let tail = '';
  const listening = new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`coordinator did not listen within ${o.timeoutMs ?? 120_000} ms; log: ${o.logFile}`)), o.timeoutMs ?? 120_000);
    let buffer = '';
    const onData = (chunk: Buffer) => {
      log.write(chunk);
      tail = (tail + chunk.toString()).slice(-4000);
      buffer += chunk.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.includes('"coordinator listening"')) {
          clearTimeout(timer);
          ok();
        }
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      fail(new Error(`coordinator exited (code ${code}) before listening\n${tail}`));
    });
  });
  void exited.then(() => log.end());
  await listening;
  return {
    url: `http://127.0.0.1:${port}`,
    child,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Minimal admin REST call with the bearer token. */
export async function adminRequest<T>(url: string, token: string, method: string, route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${url}${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${route}: HTTP ${res.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}
