/**
 * Starts a real coordinator process for the round benchmark, through the process harness shared
 * with the demo and the end-to-end tests (scripts/lib).
 */
import type { ChildProcess } from 'node:child_process';
import { AdminClient, COORDINATOR_BIN, freePort, startProcess } from '@histofed/harness';

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
  const coordinator = startProcess(
    'coordinator',
    COORDINATOR_BIN,
    ['serve', '--host', '127.0.0.1', '--port', String(port), '--data-dir', o.dataDir, '--admin-token', o.token, '--auto-approve'],
    o.logFile,
    { HISTOFED_MAX_MESSAGE_BYTES: String(o.maxMessageBytes), DATABASE_URL: undefined, HISTOFED_TEST_DATA: undefined },
  );
  await coordinator.waitFor((l) => l.msg === 'coordinator listening', o.timeoutMs ?? 120_000, 'the coordinator to listen');
  return { url: `http://127.0.0.1:${port}`, child: coordinator.child, stop: () => coordinator.stop() };
}

/** Admin REST call with the bearer token. */
export function adminRequest<T>(url: string, token: string, method: string, route: string, body?: unknown): Promise<T> {
  return new AdminClient(url, token).request<T>(method, route, body);
}
