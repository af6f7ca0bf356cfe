import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSigningKeyPair, toBase64 } from '@histofed/crypto';
import { FinalModelEvents } from '@histofed/protocol';
import { readPinnedCoordinatorKey } from './coordinator-key-pin';
import { Outbox } from './outbox';
import { SiteFinalModels } from './site-final-models';
import { SiteLogger } from './site-logger';

describe('SiteFinalModels', () => {
  let state: string;
  let logs: string[];
  let site: SiteFinalModels;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hf-site-final-'));
    logs = [];
    const logger = new SiteLogger('site-1');
    jest.spyOn(logger, 'event').mockImplementation((level, msg) => void logs.push(`${level} ${msg}`));
    site = new SiteFinalModels(state, 'site-1', 'http://coordinator', new Outbox(state, false), logger, async () => {
      throw new Error('nothing should be fetched');
    });
  });
  afterEach(() => rmSync(state, { recursive: true, force: true }));

  it('a site enrolled before keys were pinned pins the key of its next hello; another key later is refused', async () => {
    const key = toBase64(generateSigningKeyPair().publicKey);
    expect(await site.checkCoordinatorKey(key, 'hello')).toBe(true);
    expect(await readPinnedCoordinatorKey(state)).toEqual(expect.objectContaining({ signPublicKey: key, pinnedOn: 'hello', coordinatorUrl: 'http://coordinator' }));
    expect(await site.checkCoordinatorKey(key, 'enroll')).toBe(true);
    expect(await site.checkCoordinatorKey(toBase64(generateSigningKeyPair().publicKey), 'hello')).toBe(false);
    expect(logs).toEqual(['info coordinator signing key pinned', 'error coordinator signing key differs from the pinned one: not taking part']);
    // A coordinator older than pinning presents none: nothing changes, the site goes on.
    expect(await site.checkCoordinatorKey(undefined, 'hello')).toBe(true);
    expect((await readPinnedCoordinatorKey(state))?.signPublicKey).toBe(key);
  });

  it('refuses an offer it cannot check, logs why and records its answer in the outbox', async () => {
    const answer = await site.receive({ runId: '3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b', siteId: 'site-1' });
    expect(answer).toEqual({ ok: false, code: 'invalid-message', error: expect.stringMatching(/^final models offer: /) });
    expect(logs).toContain('warn final models refused');
    const outbox = readFileSync(join(state, 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(outbox.map((m) => [m.event, m.payload.ok, m.payload.code, m.payload.runId])).toEqual([[FinalModelEvents.offer, false, 'invalid-message', '3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b']]);
  });
});
