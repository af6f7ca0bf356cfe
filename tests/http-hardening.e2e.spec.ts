/**
 * The coordinator's HTTP surface and data directory, against a real process (issue 13): security
 * headers and CSPs (the dashboard and the Swagger UI still work under them, in Chromium), 400s with
 * a message for input the database cannot take, 413s logged at warn, a weak admin token refused at
 * start-up, and a data directory no other user can read.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { AdminClient, COORDINATOR_BIN, ManagedProcess, REPO_ROOT, freePort, startProcess } from '@histofed/harness';
import { itWithChromium, launchChromium } from './support/browser';

/** Entries under `root` that the group or others may read, write or enter. */
function openToOthers(root: string): string[] {
  const found: string[] = [];
  const visit = (path: string) => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return;
    if (st.mode & 0o077) found.push(`${(st.mode & 0o777).toString(8)} ${path}`);
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(root);
  return found;
}

describe('coordinator HTTP hardening', () => {
  let work: string;
  let dataDir: string;
  let coordinator: ManagedProcess;
  let url: string;
  let admin: AdminClient;
  let starts = 0;
  const token = randomBytes(24).toString('hex');

  const start = async () => {
    // The umask most systems use: PGlite's 0666 files would stay readable by every local user.
    const previous = process.umask(0o022);
    try {
      coordinator = startProcess(
        'coordinator',
        COORDINATOR_BIN,
        ['serve', '--host', '127.0.0.1', '--port', String(new URL(url).port), '--data-dir', dataDir, '--admin-token', token],
        join(work, 'logs', `coordinator.${starts++}.log`),
        { DATABASE_URL: undefined },
      );
    } finally {
      process.umask(previous);
    }
    await coordinator.waitFor((l) => l.msg === 'coordinator listening', 120_000, 'the coordinator to listen');
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-http-'));
    mkdirSync(join(work, 'logs'));
    dataDir = join(work, 'coordinator');
    url = `http://127.0.0.1:${await freePort()}`;
    admin = new AdminClient(url, token);
    await start();
  });
  afterAll(async () => {
    await coordinator?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const errorLines = () => coordinator.lines.filter((l) => l.level === 'error');

  it('sends no X-Powered-By, and nosniff and a frame-ancestors CSP on every response', async () => {
    for (const [path, auth] of [
      ['/api/health', false],
      ['/api/runs', false], // 401
      ['/api/runs', true],
      ['/api/no-such-route', true], // 404
      ['/', false],
      ['/api/docs', false],
      ['/api/docs-json', false],
    ] as const) {
      const res = await fetch(`${url}${path}`, { headers: auth ? { authorization: `Bearer ${token}` } : {} });
      await res.arrayBuffer();
      const csp = res.headers.get('content-security-policy') ?? '';
      expect([path, res.headers.get('x-powered-by'), res.headers.get('x-content-type-options'), /frame-ancestors 'none'/.test(csp)]).toEqual([
        path,
        null,
        'nosniff',
        true,
      ]);
    }
    const api = (await fetch(`${url}/api/health`)).headers.get('content-security-policy');
    expect(api).toMatch(/^default-src 'none'/);
    const dashboard = (await fetch(`${url}/`)).headers.get('content-security-policy') ?? '';
    // Scripts from its own origin (the charting library it serves) and its inline script by hash.
    expect(dashboard).toMatch(/script-src 'self' 'sha256-[A-Za-z0-9+/=]+';/);
    expect(dashboard).not.toMatch(/unsafe-inline|unsafe-eval/);
    expect(dashboard).toMatch(/connect-src 'self'/);
    const docs = (await fetch(`${url}/api/docs`)).headers.get('content-security-policy') ?? '';
    expect(docs).toMatch(/script-src 'self'(;|$)/);
  });

  it('answers input the database cannot store with 400 and a message, not 500', async () => {
    const run = await admin.request<{ id: string }>('POST', '/api/runs', { name: 'ok', model: { kind: 'small-cnn', imageSize: 32, numClasses: 2 } });
    const call = async (method: string, path: string, body?: string) => {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body,
      });
      return { status: res.status, message: String(((await res.json()) as { message?: unknown }).message) };
    };
    const nameWith = (escaped: string) => `{"name": "a${escaped}b", "model": {"kind": "small-cnn", "imageSize": 32, "numClasses": 2}}`;
    const cases: [string, string, string | undefined, RegExp][] = [
      ['POST', '/api/runs', nameWith('\\u0000'), /^run config: name: must not contain NUL/],
      ['POST', '/api/runs', nameWith('\\ud800'), /^run config: name: .*unpaired surrogate/],
      ['POST', '/api/runs', nameWith('\\udfff'), /unpaired surrogate/],
      ['POST', '/api/runs', '{"strategyOptions": {"eta\\u0000": 1}}', /^run config: strategyOptions\.\(a key\): must not contain NUL/],
      ['GET', `/api/runs/${run.id}/rounds/100000000000000000000/contributions`, undefined, /round must be a whole number from 0 to 2147483647/],
      ['GET', `/api/runs/${run.id}/rounds/1e20/contributions`, undefined, /round must be a whole number/],
      ['GET', `/api/runs/${run.id}/rounds/99999999999/contributions`, undefined, /round must be a whole number/],
      ['GET', `/api/runs/${run.id}/rounds/-1/contributions`, undefined, /round must be a whole number/],
      ['POST', '/api/sites/%00/approve', undefined, /site id must be 1-63 chars/],
      ['POST', '/api/sites/%00/revoke', undefined, /site id must be 1-63 chars/],
      ['DELETE', '/api/sites/%00', undefined, /site id must be 1-63 chars/],
      ['DELETE', `/api/sites/${'x'.repeat(64)}`, undefined, /site id must be 1-63 chars/],
    ];
    for (const [method, path, body, message] of cases) {
      const r = await call(method, path, body);
      expect([method, path, r.status]).toEqual([method, path, 400]);
      expect(r.message).toMatch(message);
    }
    // An unknown model kind is refused when the run is created, not when it starts.
    const unknownKind = await call('POST', '/api/runs', '{"model": {"kind": "resnet-9000", "imageSize": 32, "numClasses": 2}}');
    expect(unknownKind.status).toBe(400);
    expect(unknownKind.message).toMatch(/kind.*resnet-9000|resnet-9000.*kind/);
    // A name with a real (paired) emoji is fine; round 0 of an existing run is an empty list.
    expect((await call('POST', '/api/runs', nameWith('\\ud83d\\ude00'))).status).toBe(201);
    expect(await admin.request('GET', `/api/runs/${run.id}/rounds/0/contributions`)).toEqual([]);
    expect((await call('POST', '/api/sites/unknown-site/approve')).status).toBe(404);
    expect(errorLines()).toEqual([]);
  });

  it('logs a body over the limit (413) at warn, not error', async () => {
    const res = await fetch(`${url}/api/runs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x'.repeat(3_000_000) }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { message: string }).message).toBe('request entity too large');
    const line = await coordinator.waitFor((l) => l.msg === 'request refused' && l.status === 413, 10_000, 'the 413 log line');
    expect(line).toEqual(expect.objectContaining({ level: 'warn', method: 'POST', path: '/api/runs', type: 'entity.too.large' }));
    expect(errorLines()).toEqual([]);
  });

  itWithChromium('the dashboard and the Swagger UI work under their CSPs (Chromium)', async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const violations: string[] = [];
      page.on('console', (m) => {
        if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
      });
      await page.goto(`${url}/api/docs`);
      await page.waitForSelector('.opblock-summary-path', { timeout: 30_000 });
      expect(await page.$$eval('.opblock-summary-path', (els) => els.map((e) => e.textContent))).toEqual(expect.arrayContaining(['/api/runs', '/api/health']));
      await page.goto(url);
      await page.fill('#token', token);
      await page.click('#auth button');
      await page.waitForSelector('#runs tbody tr[data-run]', { timeout: 20_000 });
      expect(await page.textContent('#sites tbody')).toMatch(/no site has connected yet/);
      expect(await page.textContent('#status')).toMatch(/backend .* database pglite/);
      expect(violations).toEqual([]);
      // A page of another origin cannot frame the dashboard.
      const framed = await page.evaluate(`(async () => {
        const frame = document.createElement('iframe');
        frame.src = ${JSON.stringify(`${url}/`)};
        document.body.appendChild(frame);
        await new Promise((r) => setTimeout(r, 1500));
        try {
          return frame.contentDocument && frame.contentDocument.querySelector('#token') ? 'loaded' : 'blocked';
        } catch {
          return 'blocked';
        }
      })()`);
      expect(framed).toBe('blocked');
    } finally {
      await browser.close();
    }
  });

  it('keeps its data directory private: 0700, no file readable by others, also after a restart that fixes old modes', async () => {
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dataDir, 'pgdata')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dataDir, 'coordinator-keys.json')).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dataDir, 'pgdata', 'base')).length).toBeGreaterThan(0);
    expect(openToOthers(dataDir)).toEqual([]);

    // A data directory left open by an older version is made private at start-up, and said so.
    await coordinator.stop();
    chmodSync(dataDir, 0o755);
    chmodSync(join(dataDir, 'pgdata'), 0o755);
    chmodSync(join(dataDir, 'pgdata', 'PG_VERSION'), 0o644);
    chmodSync(join(dataDir, 'coordinator-keys.json'), 0o644);
    await start();
    const fixed = coordinator.lines.find((l) => l.msg === 'data directory was open to other users: made it private');
    expect(fixed).toEqual(expect.objectContaining({ level: 'warn', directories: 1 }));
    expect(fixed?.files).toBeGreaterThanOrEqual(2);
    expect(openToOthers(dataDir)).toEqual([]);
    expect(errorLines()).toEqual([]);
  });

  it('refuses to start with a placeholder or low-entropy admin token, naming the variable', () => {
    for (const weak of ['change-me-to-a-long-random-token', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa']) {
      const r = spawnSync(process.execPath, [COORDINATOR_BIN, 'serve', '--port', '0', '--data-dir', join(work, 'never')], {
        cwd: REPO_ROOT,
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...process.env, DATABASE_URL: '', HISTOFED_ADMIN_TOKEN: weak },
      });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/histofed-coordinator: coordinator configuration: --admin-token \/ HISTOFED_ADMIN_TOKEN: /);
      expect(r.stderr).not.toContain(weak);
    }
  });
});
