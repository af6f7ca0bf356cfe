/**
 * Site identity across real processes: a coordinator (embedded PostgreSQL) that does not approve
 * sites by itself, one real site client, and rogue socket.io clients. Only enrolled, approved
 * sites that sign a fresh challenge connect; contributions must carry the enrolled key's signature
 * and a nonce never used before — also after a coordinator crash.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import { generateSyntheticBreakHis } from '@histofed/data';
import { PROTOCOL_VERSION, PreparedUpdate, SITE_NAMESPACE, SiteEvents, TrainTask } from '@histofed/protocol';
import { Federation, startFederation } from '@histofed/harness';
import { RogueSite } from '@histofed/harness';

interface Contribution {
  siteId: string;
  status: string;
  reason: string | null;
}

describe('site identity', () => {
  let work: string;
  let fed: Federation;
  const rogues: RogueSite[] = [];
  const rogue = (id: string, behaviour: (r: RogueSite, task: TrainTask) => Promise<void> = async () => undefined, keys?: RogueSite['keys']) => {
    const r = new RogueSite(fed.url, id, behaviour, keys);
    rogues.push(r);
    return r;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-identity-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 5, patientsPerSubtype: 1, imagesPerPatient: 4 });
    fed = await startFederation({ dataDir: data, workDir: work, sites: 1, seed: 5, approval: 'admin' });
  });
  afterAll(async () => {
    for (const r of rogues) r.close();
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('a real site enrolls, waits while pending, and connects once an administrator approves it', async () => {
    const site = fed.sites[0];
    expect(site.lines.some((l) => l.msg === 'enrolled with coordinator' && l.status === 'pending')).toBe(true);
    expect(site.lines.some((l) => l.msg === 'coordinator refused this site; asking again' && l.code === 'pending-approval' && /awaiting approval/.test(String(l.error)))).toBe(true);
    expect(site.lines.some((l) => l.msg === 'connected to coordinator')).toBe(true);
    const keyFile = join(fed.siteStateDir('site-1'), 'site-keys.json');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(Object.keys(JSON.parse(readFileSync(keyFile, 'utf8'))).sort()).toEqual(['boxPublicKey', 'boxSecretKey', 'signPublicKey', 'signSecretKey']);
    const sites = await fed.admin.request<{ siteId: string; status: string; signKeyFingerprint: string }[]>('GET', '/api/sites');
    expect(sites.find((s) => s.siteId === 'site-1')).toEqual(expect.objectContaining({ status: 'approved', signKeyFingerprint: expect.stringMatching(/^[0-9a-f:]{24}$/) }));
  });

  it('refuses unknown, pending, impostor and unchallenged connections; revocation and deletion take effect', async () => {
    const stranger = rogue('stranger');
    expect(await stranger.hello(5)).toEqual({ ok: false, code: 'not-enrolled', error: expect.stringMatching(/not enrolled/) });

    const newcomer = rogue('newcomer');
    expect((await newcomer.enroll()).status).toBe('pending');
    expect(await newcomer.hello(5)).toEqual({ ok: false, code: 'pending-approval', error: expect.stringMatching(/awaiting approval/) });
    await fed.admin.request('POST', '/api/sites/newcomer/approve');
    expect((await newcomer.hello(5)).ok).toBe(true);

    // Someone who knows site-1's id but not its keys.
    const impostor = rogue('site-1');
    await expect(impostor.enroll()).rejects.toThrow(/HTTP 409.*enrolled with other keys/);
    expect(await impostor.hello(5)).toEqual({ ok: false, code: 'key-mismatch', error: expect.stringMatching(/enrolled with other keys/) });
    const enrolled = (await fed.admin.request<{ siteId: string; boxPublicKey: string; signPublicKey: string }[]>('GET', '/api/sites')).find(
      (s) => s.siteId === 'site-1',
    )!;
    // The right public keys, but a signature made with another key.
    const forger = { ...RogueSite.impostor('site-1'), boxPublicKey: enrolled.boxPublicKey, signPublicKey: enrolled.signPublicKey };
    expect(await impostor.hello(5, forger)).toEqual({ ok: false, code: 'bad-signature', error: expect.stringMatching(/signature does not verify/) });
    expect(fed.sites[0].lines.some((l) => l.msg === 'disconnected from coordinator')).toBe(false);

    // A hello without a challenge on this connection (e.g. replayed from another connection).
    const socket = io(`${fed.url}${SITE_NAMESPACE}`, { transports: ['websocket'], reconnection: false });
    const replayed = await socket.timeout(10_000).emitWithAck(SiteEvents.hello, {
      protocolVersion: PROTOCOL_VERSION,
      siteId: 'newcomer',
      boxPublicKey: newcomer.signer.boxPublicKey,
      signPublicKey: newcomer.signer.signPublicKey,
      signature: Buffer.alloc(64, 1).toString('base64'),
      backend: 'none',
      software: 'replay',
      trainSamples: 5,
      validationSamples: 0,
    });
    socket.disconnect();
    expect(replayed).toEqual({ ok: false, code: 'no-challenge', error: expect.stringMatching(/no valid challenge/) });

    await fed.admin.request('POST', '/api/sites/newcomer/revoke');
    await fed.admin.poll(async () => (newcomer.socket.connected ? undefined : true), 10_000, 'the revoked site to be disconnected');
    expect(await rogue('newcomer', undefined, newcomer.keys).hello(5)).toEqual({ ok: false, code: 'revoked', error: expect.stringMatching(/revoked/) });
    // Deleting a site lets it enroll again with new keys (e.g. its key file was lost).
    const reborn = rogue('newcomer');
    await expect(reborn.enroll()).rejects.toThrow(/HTTP 409/);
    await fed.admin.request('DELETE', '/api/sites/newcomer');
    expect((await reborn.enroll()).status).toBe('pending');
    expect(await reborn.hello(5)).toEqual({ ok: false, code: 'pending-approval', error: expect.stringMatching(/awaiting approval/) });
  });

  it('accepts only signed, fresh contributions: forged, replayed and cross-round updates are rejected, also after a crash', async () => {
    let round1: PreparedUpdate | undefined;
    const courier = rogue('courier', async (r, task) => {
      if (task.config.round === 1) {
        const forged = r.update(task, { signer: { ...RogueSite.impostor('courier'), boxPublicKey: r.signer.boxPublicKey, signPublicKey: r.signer.signPublicKey } });
        await r.deliver('forged', forged);
        round1 = r.update(task);
        await r.deliver('genuine', round1);
        await r.deliver('replayed in round', round1);
      } else {
        await r.deliver('replayed next round', round1!);
        // A round-1 update relabelled as round 2 (its signature no longer matches), and one signed for round 1.
        await r.deliver('cross-round', r.update(task, { round: 1 }), { round: 2 });
        await r.deliver('cross-round signed', r.update(task, { round: 1 }));
        await r.deliver('genuine 2', r.update(task));
      }
    });
    expect((await courier.enroll()).status).toBe('pending');
    await fed.admin.request('POST', '/api/sites/courier/approve');
    expect((await courier.hello(5)).ok).toBe(true);

    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 2,
      minSites: 1,
      maxSites: 2,
      localEpochs: 1,
      personalizeEpochs: 0,
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 },
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const run = await fed.admin.waitForRun<{ status: string }>(id, 180_000);
    expect(run.status).toBe('completed');
    const ack = (what: string) => courier.replies.find((r) => r.what === what)?.ack;
    expect(ack('forged')).toEqual({ ok: false, error: expect.stringMatching(/signature does not verify/) });
    expect(ack('genuine')).toEqual({ ok: true });
    expect(ack('replayed in round')).toEqual({ ok: false, error: expect.stringMatching(/nonce already used/) });
    expect(ack('replayed next round')).toEqual({ ok: false, error: expect.stringMatching(/nonce already used/) });
    expect(ack('cross-round')).toEqual({ ok: false, error: expect.stringMatching(/signature does not verify/) });
    expect(ack('cross-round signed')).toEqual({ ok: false, error: expect.stringMatching(/no open round task for run .* round 1/) });
    const stored = async (round: number) =>
      (await fed.admin.request<Contribution[]>('GET', `/api/runs/${id}/rounds/${round}/contributions`)).filter((c) => c.siteId === 'courier');
    expect(ack('genuine 2')).toEqual({ ok: true });
    // Stored with their reasons under the round they claim (a message that fails validation never
    // gets as far as a run): forged, genuine, two replays and the round-1 update sent in round 2;
    // in round 2 the relabelled one and the genuine one.
    expect((await stored(1)).map((c) => c.status)).toEqual(['rejected', 'accepted', 'rejected', 'rejected', 'rejected']);
    expect((await stored(2)).map((c) => c.status)).toEqual(['rejected', 'accepted']);

    // Nonces live in the database: after a crash the old update is still recognised as a replay,
    // also while a round of a new run awaits an update from the site.
    await fed.restartCoordinator('SIGKILL');
    const after = rogue('courier', async (r, task) => {
      await r.deliver('replayed after restart', round1!);
      await r.deliver('genuine after restart', r.update(task));
    }, courier.keys);
    expect((await after.hello(5)).ok).toBe(true);
    // No round awaits an update from it now: the upload itself is refused, before anything is held.
    await expect(after.deliver('upload outside a round', round1!)).rejects.toThrow(/refused by the receiver: .*no upload is expected on this connection now/);
    const next = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      rounds: 1,
      minSites: 1,
      maxSites: 2,
      localEpochs: 1,
      personalizeEpochs: 0,
      model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 },
    });
    await fed.admin.request('POST', `/api/runs/${next.id}/start`);
    expect((await fed.admin.waitForRun<{ status: string }>(next.id, 180_000)).status).toBe('completed');
    const replyOf = (what: string) => after.replies.find((r) => r.what === what)?.ack;
    expect(replyOf('replayed after restart')).toEqual({ ok: false, error: expect.stringMatching(/nonce already used/) });
    expect(replyOf('genuine after restart')).toEqual({ ok: true });
  });
});
