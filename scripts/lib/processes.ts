import { ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createWriteStream, WriteStream } from 'node:fs';
import { join, resolve } from 'node:path';

/** Repository root (scripts/lib/..). */
export const REPO_ROOT = resolve(__dirname, '..', '..');
export const COORDINATOR_BIN = join(REPO_ROOT, 'apps', 'coordinator', 'bin', 'histofed-coordinator.js');
export const SITE_BIN = join(REPO_ROOT, 'apps', 'site-client', 'bin', 'histofed-site.js');

/**
 * Coordinator settings for a federation whose sites all run on this machine: every site, the
 * admin client and the test connect from 127.0.0.1, which the per-address limits (issue 13) would
 * otherwise treat as one client. Tests of the limits themselves override these.
 */
export const SAME_HOST_FEDERATION_ENV: NodeJS.ProcessEnv = {
  HISTOFED_ENROLL_PER_MINUTE: '100000',
  HISTOFED_REQUESTS_PER_MINUTE: '1000000',
  HISTOFED_MAX_CONNECTIONS_PER_ADDRESS: '4096',
};

/** A free TCP port on localhost. */
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

export type LogLine = Record<string, unknown> & { msg?: string; level?: string };

/** A child process whose JSON log lines are parsed, kept and copied to a log file. */
export class ManagedProcess {
  readonly lines: LogLine[] = [];
  private readonly listeners: ((l: LogLine) => void)[] = [];
  private readonly log: WriteStream;
  readonly exited: Promise<number | null>;
  private stderrTail = '';

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    logFile: string,
  ) {
    this.log = createWriteStream(logFile, { flags: 'a' });
    let buffer = '';
    const onData = (chunk: Buffer, stream: 'stdout' | 'stderr') => {
      this.log.write(chunk);
      if (stream === 'stderr') this.stderrTail = (this.stderrTail + chunk.toString()).slice(-4000);
      buffer += chunk.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const text = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let line: LogLine;
        try {
          line = JSON.parse(text);
        } catch {
          line = { msg: text, level: 'raw' };
        }
        this.lines.push(line);
        for (const l of this.listeners) l(line);
      }
    };
    child.stdout?.on('data', (c: Buffer) => onData(c, 'stdout'));
    child.stderr?.on('data', (c: Buffer) => onData(c, 'stderr'));
    this.exited = new Promise((ok) => child.once('exit', (code) => ok(code)));
    void this.exited.then(() => this.log.end());
  }

  onLine(listener: (l: LogLine) => void): void {
    this.listeners.push(listener);
  }

  /** Resolves with the first line matching `predicate` (also among lines already seen). */
  waitFor(predicate: (l: LogLine) => boolean, timeoutMs: number, what: string): Promise<LogLine> {
    const seen = this.lines.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      this.onLine((l) => {
        if (predicate(l)) {
          clearTimeout(timer);
          ok(l);
        }
      });
      void this.exited.then((code) => {
        clearTimeout(timer);
        fail(new Error(`${this.name} exited (code ${code}) while waiting for ${what}\n${this.stderrTail}`));
      });
    });
  }

  get stderr(): string {
    return this.stderrTail;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Starts `node bin args`; `env` adds to this process's environment (an undefined value removes a variable). */
export function startProcess(name: string, bin: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): ManagedProcess {
  const merged: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: REPO_ROOT,
    env: merged,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new ManagedProcess(name, child, logFile);
}
