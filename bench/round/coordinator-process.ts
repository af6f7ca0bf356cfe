/**
 * Starts a real coordinator process for the round benchmark, through the process harness shared
 * with the demo and the end-to-end tests (scripts/lib).
 *
 * BENCH_COORDINATOR_NODE_FLAGS adds Node flags to the coordinator's command line only (not to the
 * benchmark process), e.g. BENCH_COORDINATOR_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof"
 * (--cpu-prof is not allowed in NODE_OPTIONS). The profile is written when the coordinator exits.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { AdminClient, COORDINATOR_BIN, ManagedProcess, REPO_ROOT, SAME_HOST_FEDERATION_ENV, freePort, startProcess } from '@histofed/harness';

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
  /** Largest model or sealed update the coordinator accepts (HISTOFED_MAX_MODEL_BYTES). */
  maxModelBytes: number;
  timeoutMs?: number;
  nodeFlags?: string[];
}): Promise<CoordinatorProcess> {
  const port = await freePort();
  const args = ['serve', '--host', '127.0.0.1', '--port', String(port), '--data-dir', o.dataDir, '--admin-token', o.token, '--auto-approve'];
  const env = { ...SAME_HOST_FEDERATION_ENV, HISTOFED_MAX_MODEL_BYTES: String(o.maxModelBytes), DATABASE_URL: undefined, HISTOFED_TEST_DATA: undefined };
  const nodeFlags = o.nodeFlags ?? (process.env.BENCH_COORDINATOR_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
  let coordinator: ManagedProcess;
  if (nodeFlags.length === 0) {
    coordinator = startProcess('coordinator', COORDINATOR_BIN, args, o.logFile, env);
  } else {
    const merged: NodeJS.ProcessEnv = { ...process.env, ...env };
    for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
    const child = spawn(process.execPath, [...nodeFlags, COORDINATOR_BIN, ...args], { cwd: REPO_ROOT, env: merged, stdio: ['ignore', 'pipe', 'pipe'] });
    coordinator = new ManagedProcess('coordinator', child, o.logFile);
  }
  await coordinator.waitFor((l) => l.msg === 'coordinator listening', o.timeoutMs ?? 120_000, 'the coordinator to listen');
  return { url: `http://127.0.0.1:${port}`, child: coordinator.child, stop: () => coordinator.stop() };
}

/** Admin REST call with the bearer token. */
export function adminRequest<T>(url: string, token: string, method: string, route: string, body?: unknown): Promise<T> {
  return new AdminClient(url, token).request<T>(method, route, body);
}
