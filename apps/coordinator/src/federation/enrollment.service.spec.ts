import { generateBoxKeyPair, generateSigningKeyPair, identitySigner } from '@histofed/crypto';
import { EnrollmentRequest, enrollmentRequest } from '@histofed/protocol';
import { loadCoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import type { EnrollmentToken, SiteRecord, SiteStatus } from '../persistence/records';
import { CoordinatorKeys } from './coordinator-keys';
import { EnrollmentRefused, EnrollmentService } from './enrollment.service';

/** The parts of the store enrollment uses, in memory; every read waits a tick so requests interleave. */
function memoryStore() {
  const sites = new Map<string, SiteRecord>();
  const tokens = new Map<string, EnrollmentToken>();
  const tick = () => new Promise((r) => setImmediate(r));
  const store = {
    getSite: async (id: string) => (await tick(), sites.get(id) ?? null),
    countSites: async (status: SiteStatus) => (await tick(), [...sites.values()].filter((s) => s.status === status).length),
    deletePendingSitesEnrolledBefore: async (before: Date) => {
      await tick();
      const expired = [...sites.values()].filter((s) => s.status === 'pending' && s.firstSeenAt < before).map((s) => s.siteId);
      expired.forEach((id) => sites.delete(id));
      return expired;
    },
    enrollSite: async (site: Pick<SiteRecord, 'siteId' | 'boxPublicKey' | 'signPublicKey'>, status: SiteStatus) => {
      await tick();
      const record = sites.get(site.siteId) ?? ({ ...site, status, firstSeenAt: new Date(), lastSeenAt: new Date() } as SiteRecord);
      sites.set(site.siteId, { ...record, boxPublicKey: site.boxPublicKey, signPublicKey: site.signPublicKey });
      return sites.get(site.siteId)!;
    },
    putEnrollmentToken: async (t: EnrollmentToken) => void tokens.set(t.siteId, t),
    getEnrollmentToken: async (id: string) => (await tick(), tokens.get(id) ?? null),
    deleteEnrollmentToken: async (id: string) => tokens.delete(id),
  };
  return { store: store as unknown as CoordinatorStore, sites, tokens };
}

function setUp(env: NodeJS.ProcessEnv = {}) {
  const mem = memoryStore();
  const config = loadCoordinatorConfig({ HISTOFED_MAX_PENDING_SITES: '2', HISTOFED_PENDING_EXPIRY_HOURS: '24', ...env });
  const service = new EnrollmentService(mem.store, config, new JsonLogger('test', 'error'), new CoordinatorKeys(generateBoxKeyPair(), generateSigningKeyPair()));
  const request = (siteId: string, token?: string): EnrollmentRequest =>
    enrollmentRequest(identitySigner(siteId, { box: generateBoxKeyPair(), sign: generateSigningKeyPair() }), token);
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => 'accepted',
      (e) => (e instanceof EnrollmentRefused ? e.kind : `unexpected ${e}`),
    );
  return { ...mem, service, request, refusal };
}

describe('EnrollmentService', () => {
  it('reserves an id for the holder of its token, approves it, and lets the token be used once', async () => {
    const { service, request, refusal, sites, tokens } = setUp();
    const { token } = await service.issueToken('hospital-a', 1);
    expect(tokens.get('hospital-a')!.tokenSha256).not.toContain(token); // only the hash is kept
    expect(await refusal(service.enroll(request('hospital-a')))).toBe('forbidden');
    expect(await refusal(service.enroll(request('hospital-a', 'A'.repeat(43))))).toBe('forbidden');
    expect(sites.has('hospital-a')).toBe(false);
    expect((await service.enroll(request('hospital-a', token))).status).toBe('approved');
    expect(tokens.has('hospital-a')).toBe(false);
    expect(await refusal(service.enroll(request('hospital-a', token)))).toBe('conflict');
  });

  it('lets one of two simultaneous enrollments with the same token take the id, never both', async () => {
    const { service, request, refusal, sites } = setUp();
    const { token } = await service.issueToken('hospital-a', 1);
    const first = request('hospital-a', token);
    const outcomes = await Promise.all([refusal(service.enroll(first)), refusal(service.enroll(request('hospital-a', token)))]);
    expect(outcomes).toEqual(['accepted', 'conflict']);
    expect(sites.get('hospital-a')!.signPublicKey).toBe(first.signPublicKey);
  });

  it('refuses an expired token', async () => {
    const { service, request, refusal, tokens } = setUp();
    const { token } = await service.issueToken('hospital-a', 1);
    tokens.set('hospital-a', { ...tokens.get('hospital-a')!, expiresAt: new Date(Date.now() - 1000) });
    expect(await refusal(service.enroll(request('hospital-a', token)))).toBe('forbidden');
  });

  it('caps the pending sites, also under simultaneous requests, and deletes pending enrollments once they expire', async () => {
    const { service, request, refusal, sites } = setUp();
    const outcomes = await Promise.all(['p1', 'p2', 'p3', 'p4'].map((id) => refusal(service.enroll(request(id)))));
    expect(outcomes.filter((o) => o === 'accepted')).toHaveLength(2);
    expect(outcomes.filter((o) => o === 'busy')).toHaveLength(2);
    expect(sites.size).toBe(2);
    // An approved site does not count; an enrollment older than the expiry goes and frees a place.
    const [oldest, other] = [...sites.keys()];
    sites.set(oldest, { ...sites.get(oldest)!, firstSeenAt: new Date(Date.now() - 25 * 3600_000) });
    sites.set(other, { ...sites.get(other)!, status: 'approved' });
    expect(await refusal(service.enroll(request('p5')))).toBe('accepted');
    expect(await refusal(service.enroll(request('p6')))).toBe('accepted');
    expect(await refusal(service.enroll(request('p7')))).toBe('busy');
    expect(sites.has(oldest)).toBe(false);
    expect(sites.get(other)!.status).toBe('approved');
  });

  it('with requireToken, enrolls only token holders; a token-approved site does not count against the ceiling', async () => {
    const { service, request, refusal } = setUp({ HISTOFED_REQUIRE_ENROLLMENT_TOKEN: 'true', HISTOFED_MAX_PENDING_SITES: '1' });
    expect(await refusal(service.enroll(request('walk-in')))).toBe('forbidden');
    for (const id of ['h1', 'h2', 'h3']) {
      const { token } = await service.issueToken(id, 1);
      expect((await service.enroll(request(id, token))).status).toBe('approved');
    }
  });

  it('refuses a proof signed by another key as invalid, before touching the store', async () => {
    const { service, request, refusal, sites } = setUp();
    const forged = { ...request('site-x'), signPublicKey: request('site-x').signPublicKey };
    expect(await refusal(service.enroll(forged))).toBe('invalid');
    expect(sites.size).toBe(0);
  });
});
