import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AdminClient } from './admin-client';
import { COORDINATOR_BIN, ManagedProcess, SAME_HOST_FEDERATION_ENV, SITE_BIN, freePort, startProcess } from './processes';

export interface FederationOptions {
  /** BreakHis tree shared by the simulated sites (each takes its partition; test cases held out). */
  readonly dataDir: string;
  /**
   * Each site's own BreakHis tree instead of a partition of dataDir (then the coordinator evaluates
   * on `testDataDir`, or dataDir, whole).
   */
  readonly siteDataDirs?: readonly string[];
  readonly testDataDir?: string;
  /** Image and tile-feature cache shared by the sites (default: a fresh one in workDir). */
  readonly cacheDir?: string;
  readonly workDir: string;
  readonly sites: number;
  readonly seed?: number;
  readonly testFraction?: number;
  readonly backend?: string;
  /** Extra environment for the coordinator. It uses embedded PGlite unless this sets DATABASE_URL. */
  readonly coordinatorEnv?: NodeJS.ProcessEnv;
  readonly auditPlaintext?: boolean;
  /** Per site (by index), its clinical table (histofed-site --clinical); undefined entries: none. */
  readonly clinicalCsvs?: readonly (string | undefined)[];
  /** How the simulated sites differ (histofed-site --partition); default iid. */
  readonly partition?: string;
  readonly alpha?: number;
  readonly timeoutMs?: number;
  /**
   * 'auto' (default): the coordinator approves enrolled sites by itself (--auto-approve).
   * 'admin': sites stay pending until this harness approves them through the admin API, once each
   * has enrolled and been refused while pending.
   * 'pending': nobody approves them (the dashboard test does, from the page); startFederation
   * returns once each has enrolled and been refused while pending, without waiting for connections.
   */
  readonly approval?: 'auto' | 'admin' | 'pending';
}

export interface Federation {
  /** The current coordinator process (replaced by restartCoordinator). */
  readonly coordinator: ManagedProcess;
  readonly sites: ManagedProcess[];
  readonly siteIds: string[];
  readonly admin: AdminClient;
  readonly url: string;
  readonly token: string;
  siteStateDir(siteId: string): string;
  /** Stops the coordinator with `signal` (SIGKILL = crash) and starts it again on the same port and data. */
  restartCoordinator(signal: NodeJS.Signals): Promise<void>;
  /** Stops a site with `signal` and starts it again (same id, keys and data): `sites[i]` is replaced. */
  restartSite(siteId: string, signal: NodeJS.Signals, pauseMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a coordinator (embedded PostgreSQL unless coordinatorEnv sets DATABASE_URL) and N site
 * clients as separate processes on localhost, and waits until every site is connected.
 */
export async function startFederation(o: FederationOptions): Promise<Federation> {
  const seed = o.seed ?? 1;
  if (o.siteDataDirs && o.siteDataDirs.length !== o.sites) throw new Error(`siteDataDirs: ${o.siteDataDirs.length} folders for ${o.sites} sites`);
  const testFraction = o.testFraction ?? 0.25;
  const timeoutMs = o.timeoutMs ?? 120_000;
  const port = await freePort();
  const token = randomBytes(24).toString('hex');
  const url = `http://127.0.0.1:${port}`;
  mkdirSync(join(o.workDir, 'logs'), { recursive: true });
  const common = o.backend ? ['--backend', o.backend] : [];
  const startCoordinator = (n: number) => startProcess(
    'coordinator',
    COORDINATOR_BIN,
    [
      'serve',
      '--host', '127.0.0.1',
      '--port', String(port),
      '--data-dir', join(o.workDir, 'coordinator'),
      '--admin-token', token,
      ...(o.approval === 'admin' || o.approval === 'pending' ? [] : ['--auto-approve']),
      '--test-data', o.testDataDir ?? o.dataDir,
      ...(o.sites > 0 && !o.siteDataDirs ? ['--simulate-sites', String(o.sites)] : []),
      '--seed', String(seed),
      '--test-fraction', String(testFraction),
      ...common,
    ],
    join(o.workDir, 'logs', n === 0 ? 'coordinator.log' : `coordinator.${n}.log`),
    { DATABASE_URL: undefined, ...SAME_HOST_FEDERATION_ENV, ...o.coordinatorEnv },
  );
  let coordinator = startCoordinator(0);
  let restarts = 0;
  const sites: ManagedProcess[] = [];
  const siteIds = Array.from({ length: o.sites }, (_, i) => `site-${i + 1}`);
  const stop = async () => {
    await Promise.all(sites.map((s) => s.stop()));
    await coordinator.stop();
  };
  const listening = (c: ManagedProcess) => c.waitFor((l) => l.msg === 'coordinator listening', timeoutMs, 'the coordinator to listen');
  const siteRestarts = new Map<string, number>();
  const startSite = (siteId: string, i: number) => {
    const n = siteRestarts.get(siteId) ?? 0;
    return startProcess(
      siteId,
      SITE_BIN,
      [
        'run',
        '--coordinator', url,
        '--site-id', siteId,
        ...(o.siteDataDirs
          ? ['--data', o.siteDataDirs[i]]
          : ['--data', o.dataDir, '--simulate', `${i + 1}/${o.sites}`, '--seed', String(seed), '--test-fraction', String(testFraction)]),
        '--state-dir', join(o.workDir, siteId),
        '--cache-dir', o.cacheDir ?? join(o.workDir, 'image-cache'),
        ...(o.partition ? ['--partition', o.partition] : []),
        ...(o.alpha !== undefined ? ['--alpha', String(o.alpha)] : []),
        ...common,
        ...(o.auditPlaintext ? ['--audit-plaintext'] : []),
        ...(o.clinicalCsvs?.[i] ? ['--clinical', o.clinicalCsvs[i] as string] : []),
      ],
      join(o.workDir, 'logs', n === 0 ? `${siteId}.log` : `${siteId}.${n}.log`),
    );
  };
  try {
    await listening(coordinator);
    siteIds.forEach((siteId, i) => sites.push(startSite(siteId, i)));
    const admin = new AdminClient(url, token);
    if (o.approval === 'admin' || o.approval === 'pending') {
      // As an administrator would: the site has enrolled and was turned away while pending.
      for (const [i, siteId] of siteIds.entries()) {
        await sites[i].waitFor((l) => l.msg === 'coordinator refused this site; asking again', timeoutMs, `${siteId} to be refused while pending`);
        if (o.approval === 'admin') await admin.request('POST', `/api/sites/${siteId}/approve`);
      }
    }
    if (o.approval !== 'pending') await Promise.all(sites.map((s) => s.waitFor((l) => l.msg === 'connected to coordinator', timeoutMs, 'connection')));
    return {
      get coordinator() {
        return coordinator;
      },
      sites,
      siteIds,
      admin,
      url,
      token,
      siteStateDir: (id) => join(o.workDir, id),
      restartSite: async (siteId, signal, pauseMs = 0) => {
        const i = siteIds.indexOf(siteId);
        if (i < 0) throw new Error(`no site ${siteId}`);
        await sites[i].stop(signal);
        await new Promise((r) => setTimeout(r, pauseMs));
        siteRestarts.set(siteId, (siteRestarts.get(siteId) ?? 0) + 1);
        sites[i] = startSite(siteId, i);
      },
      restartCoordinator: async (signal) => {
        await coordinator.stop(signal);
        coordinator = startCoordinator(++restarts);
        await listening(coordinator);
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
