/**
 * What POST /api/enroll lets anyone do, against a real coordinator process (issue 13): an id with
 * an administrator-issued token cannot be squatted, the token approves the site and is single use,
 * the number of pending sites has a ceiling, and one address is rate-limited (429 with Retry-After)
 * before the handler runs. Nothing already stored changes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateBoxKeyPair, generateSigningKeyPair, identitySigner } from '@histofed/crypto';
import { Federation, startFederation } from '@histofed/harness';
import { enrollmentRequest } from '@histofed/protocol';

const ENROLL_PER_MINUTE = 9;
const MAX_PENDING = 3;
const REQUESTS_PER_MINUTE = 40;

describe('enrollment limits', () => {
  let work: string;
  let fed: Federation;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-enroll-'));
    fed = await startFederation({
      dataDir: work,
      workDir: work,
      sites: 0,
      approval: 'admin', // no auto-approve: enrollments wait for an administrator
      coordinatorEnv: {
        HISTOFED_ENROLL_PER_MINUTE: String(ENROLL_PER_MINUTE),
        HISTOFED_MAX_PENDING_SITES: String(MAX_PENDING),
        HISTOFED_REQUESTS_PER_MINUTE: String(REQUESTS_PER_MINUTE),
      },
    });
  });
  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const signer = (siteId: string) => identitySigner(siteId, { box: generateBoxKeyPair(), sign: generateSigningKeyPair() });
  const enroll = async (body: unknown) => {
    const res = await fetch(`${fed.url}/api/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as { status?: string; message?: string } };
  };

  it('reserves a tokened id, approves its holder once, caps pending sites, and throttles one address', async () => {
    let used = 0;
    const count = <T>(x: T) => (used++, x);

    const issued = await fed.admin.request<{ siteId: string; token: string; expiresAt: string }>('POST', '/api/sites/hospital-a/enrollment-token', {});
    expect(issued.token.length).toBeGreaterThanOrEqual(40);
    expect(Date.parse(issued.expiresAt)).toBeGreaterThan(Date.now() + 6 * 24 * 3600_000);
    // The token is shown once: the site list does not carry it.
    expect(JSON.stringify(await fed.admin.request('GET', '/api/sites'))).not.toContain(issued.token);

    // A squatter cannot take the id, with no token or a guessed one.
    const squatter = enrollmentRequest(signer('hospital-a'));
    expect(count(await enroll(squatter))).toMatchObject({ status: 403, body: { message: expect.stringMatching(/reserved/) } });
    expect(count(await enroll({ ...squatter, enrollmentToken: 'x'.repeat(43) }))).toMatchObject({ status: 403 });
    expect(count(await enroll({ ...squatter, enrollmentToken: 'short' }))).toMatchObject({ status: 400 });

    // The hospital enrolls with its token and is approved; the token cannot be used again.
    const real = enrollmentRequest(signer('hospital-a'), issued.token);
    expect(count(await enroll(real))).toMatchObject({ status: 200, body: { status: 'approved' } });
    expect(count(await enroll(enrollmentRequest(signer('hospital-a'), issued.token)))).toMatchObject({ status: 409 });

    // Without tokens, at most MAX_PENDING sites wait for approval.
    for (let i = 1; i <= MAX_PENDING; i++) {
      expect(count(await enroll(enrollmentRequest(signer(`pending-${i}`))))).toMatchObject({ status: 200, body: { status: 'pending' } });
    }
    expect(count(await enroll(enrollmentRequest(signer('one-too-many'))))).toMatchObject({ status: 429, body: { message: expect.stringMatching(/await approval/) } });
    expect(used).toBe(ENROLL_PER_MINUTE);

    // The address has used its enrollments for this minute: refused before the handler runs.
    const throttled = await enroll(enrollmentRequest(signer('pending-x')));
    expect(throttled.status).toBe(429);
    expect(Number(throttled.retryAfter)).toBeGreaterThan(0);

    const sites = await fed.admin.request<{ siteId: string; status: string }[]>('GET', '/api/sites');
    expect(sites.map((s) => [s.siteId, s.status])).toEqual([
      ['hospital-a', 'approved'],
      ...Array.from({ length: MAX_PENDING }, (_, i) => [`pending-${i + 1}`, 'pending']),
    ]);

    // Every route is limited per address too (the admin calls above count).
    let health = 0;
    let lastStatus = 200;
    while (lastStatus === 200 && health < REQUESTS_PER_MINUTE + 5) {
      const res = await fetch(`${fed.url}/api/health`);
      await res.arrayBuffer();
      lastStatus = res.status;
      health++;
    }
    expect(lastStatus).toBe(429);
    expect(health).toBeLessThanOrEqual(REQUESTS_PER_MINUTE);

    // Refusals were logged as warnings, none as errors.
    expect(fed.coordinator.lines.filter((l) => l.level === 'error')).toEqual([]);
    expect(fed.coordinator.lines.some((l) => l.msg === 'enrollment refused' && l.level === 'warn')).toBe(true);
  });
});
