import { IdentityKeys, generateBoxKeyPair, generateSigningKeyPair, identitySigner, toBase64 } from '@histofed/crypto';
import {
  CoordinatorEvents,
  PROTOCOL_VERSION,
  SecAggEvents,
  SiteEvents,
  SiteHello,
  TrainTask,
  authenticate,
  chunkCount,
} from '@histofed/protocol';
import { loadCoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import type { SiteRecord, SiteStatus } from '../persistence/records';
import { CoordinatorKeys } from './coordinator-keys';
import { SessionSocket, SiteSessionsService } from './site-sessions.service';

/** A socket.io socket's sending side: records what was emitted and answers with `answer`. */
class FakeSocket implements SessionSocket {
  static next = 0;
  readonly id = `socket-${FakeSocket.next++}`;
  readonly sent: { event: string; payload: unknown; timeoutMs: number }[] = [];
  disconnected = false;
  constructor(private readonly answer: (event: string, payload: unknown, timeoutMs: number) => Promise<unknown> = async () => ({ ok: true })) {}
  timeout(timeoutMs: number) {
    return {
      emitWithAck: (event: string, payload: unknown) => {
        this.sent.push({ event, payload, timeoutMs });
        return this.answer(event, payload, timeoutMs);
      },
    };
  }
  disconnect(): void {
    this.disconnected = true;
  }
}

function memoryStore() {
  const sites = new Map<string, SiteRecord>();
  const store = {
    getSite: async (id: string) => sites.get(id) ?? null,
    recordHello: async (id: string) => sites.get(id) ?? null,
    listSites: async () => [...sites.values()],
  };
  const enroll = (siteId: string, keys: IdentityKeys, status: SiteStatus, signKey = true) =>
    sites.set(siteId, {
      siteId,
      boxPublicKey: toBase64(keys.box.publicKey),
      signPublicKey: signKey ? toBase64(keys.sign.publicKey) : null,
      status,
      backend: '',
      software: '',
      trainSamples: 0,
      validationSamples: 0,
      labelledImages: 0,
      firstSeenAt: new Date(),
      lastSeenAt: new Date(),
    });
  return { store: store as unknown as CoordinatorStore, enroll };
}

function setUp() {
  const mem = memoryStore();
  const sessions = new SiteSessionsService(mem.store, loadCoordinatorConfig({}), new JsonLogger('test', 'error'), new CoordinatorKeys(generateBoxKeyPair(), generateSigningKeyPair()));
  const keys = (): IdentityKeys => ({ box: generateBoxKeyPair(), sign: generateSigningKeyPair() });
  /** The site's side of the handshake (libs/protocol authenticate), straight into the service. */
  const hello = (socket: FakeSocket, siteId: string, k: IdentityKeys, tamper: (h: SiteHello) => SiteHello = (h) => h) =>
    authenticate(
      async (event, payload) =>
        event === SiteEvents.challenge
          ? sessions.challenge(socket, payload as { siteId: string })
          : sessions.hello(socket, tamper(payload as SiteHello)),
      identitySigner(siteId, k),
      { backend: 'none', software: 'spec', trainSamples: 3, validationSamples: 1 },
    );
  /** An approved, connected site on `socket`. */
  const connect = async (siteId: string, socket: FakeSocket) => {
    const k = keys();
    mem.enroll(siteId, k, 'approved');
    expect((await hello(socket, siteId, k)).ok).toBe(true);
    return socket;
  };
  return { ...mem, sessions, keys, hello, connect };
}

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const SHA = 'a'.repeat(64);
const task: TrainTask = {
  kind: 'round',
  modelHash: SHA,
  model: { sha256: SHA, totalBytes: 10, chunkBytes: 10, count: chunkCount(10, 10) },
  config: {
    runId: RUN,
    round: 1,
    model: { kind: 'small-cnn', imageSize: 32, numClasses: 2 },
    localEpochs: 1,
    batchSize: 8,
    learningRate: 0.01,
    proximalMu: 0,
    seed: 1,
    stainNormalization: null,
    augment: false,
    classWeighting: 'none',
    patientWeighting: false,
    localTensors: 'none',
    stainAugmentation: null,
    alignment: null,
    pretrain: null,
    startFrom: null,
  },
};

describe('SiteSessionsService.send (typed channel)', () => {
  it('emits the event with its payload and timeout, and resolves with the validated ack', async () => {
    const { sessions, connect } = setUp();
    const keys = { cPublicKey: toBase64(new Uint8Array(32).fill(1)), sPublicKey: toBase64(new Uint8Array(32).fill(2)), signature: toBase64(new Uint8Array(64).fill(3)) };
    const socket = await connect('site-a', new FakeSocket(async (event) => (event === SecAggEvents.advertise ? { ok: true, keys, extra: 'dropped' } : { ok: true })));
    const params = { neighbourCount: 2, threshold: 2, clipRange: 1, vectorLength: 10 };
    const ack = await sessions.send('site-a', SecAggEvents.advertise, { runId: RUN, round: 1, params }, 1234);
    expect(ack).toEqual({ ok: true, keys });
    expect(socket.sent).toEqual([{ event: SecAggEvents.advertise, payload: { runId: RUN, round: 1, params }, timeoutMs: 1234 }]);
    expect(await sessions.send('site-a', CoordinatorEvents.train, task, 50)).toEqual({ ok: true });
  });

  it('passes a refusal through with its code, and treats an unknown code as none', async () => {
    const { sessions, connect } = setUp();
    const answers = [
      { ok: false, error: 'site site-a is busy with another task', code: 'busy' },
      { ok: false, error: 'from a newer site', code: 'some-future-code' },
      { ok: false, error: 'from an older site' },
    ];
    await connect('site-a', new FakeSocket(async () => answers.shift()));
    expect(await sessions.send('site-a', CoordinatorEvents.train, task, 50)).toEqual({ ok: false, error: 'site site-a is busy with another task', code: 'busy' });
    expect(await sessions.send('site-a', CoordinatorEvents.train, task, 50)).toEqual({ ok: false, error: 'from a newer site' });
    expect(await sessions.send('site-a', CoordinatorEvents.train, task, 50)).toEqual({ ok: false, error: 'from an older site' });
  });

  it('refuses an ack that does not match the event’s ack schema (invalid-ack)', async () => {
    const { sessions, connect } = setUp();
    // A valid train ack is not a valid advertise ack: each event is checked against its own schema.
    await connect('site-a', new FakeSocket(async () => ({ ok: true })));
    const params = { neighbourCount: 2, threshold: 2, clipRange: 1, vectorLength: 10 };
    const ack = await sessions.send('site-a', SecAggEvents.advertise, { runId: RUN, round: 1, params }, 50);
    expect(ack).toEqual({ ok: false, code: 'invalid-ack', error: expect.stringMatching(/^coordinator:secagg-advertise ack from site-a: /) });
    const garbage = await sessions.send('site-a', SecAggEvents.unmask, { runId: RUN, round: 1, survivors: [], dropped: [] }, 50);
    expect(garbage).toMatchObject({ ok: false, code: 'invalid-ack' });
  });

  it('resolves with no-answer when the site does not acknowledge within the timeout', async () => {
    jest.useFakeTimers();
    try {
      const { sessions, connect } = setUp();
      // Like socket.io's timeout(): rejects once the time is up.
      const silent = new FakeSocket((_e, _p, ms) => new Promise((_resolve, reject) => setTimeout(() => reject(new Error('operation has timed out')), ms)));
      await connect('site-a', silent);
      let settled: unknown;
      void sessions.send('site-a', CoordinatorEvents.train, task, 1000).then((a) => (settled = a));
      await jest.advanceTimersByTimeAsync(999);
      expect(settled).toBeUndefined();
      await jest.advanceTimersByTimeAsync(1);
      expect(settled).toEqual({ ok: false, code: 'no-answer', error: 'site site-a did not acknowledge coordinator:train: operation has timed out' });
    } finally {
      jest.useRealTimers();
    }
  });

  it('refuses a site without a session (not-connected), also after it disconnected', async () => {
    const { sessions, connect } = setUp();
    expect(await sessions.send('site-x', CoordinatorEvents.train, task, 50)).toEqual({ ok: false, code: 'not-connected', error: 'site site-x is not connected' });
    const socket = await connect('site-a', new FakeSocket());
    sessions.disconnected(socket.id);
    expect(await sessions.send('site-a', CoordinatorEvents.train, task, 50)).toMatchObject({ ok: false, code: 'not-connected' });
    expect(socket.sent).toEqual([]);
  });

  it('sends to the newest connection of a site and closes the one it replaced', async () => {
    const { sessions, connect } = setUp();
    const first = await connect('site-a', new FakeSocket());
    const second = await connect('site-a', new FakeSocket());
    expect(first.disconnected).toBe(true);
    await sessions.send('site-a', CoordinatorEvents.train, task, 50);
    expect(first.sent).toHaveLength(0);
    expect(second.sent).toHaveLength(1);
  });
});

describe('SiteSessionsService.hello refusal codes', () => {
  it('names why a hello is refused with a code', async () => {
    const { hello, enroll, keys } = setUp();
    const k = keys();
    expect(await hello(new FakeSocket(), 'stranger', k)).toMatchObject({ ok: false, code: 'not-enrolled', error: expect.stringMatching(/not enrolled/) });

    enroll('pending', k, 'pending');
    expect(await hello(new FakeSocket(), 'pending', k)).toMatchObject({ ok: false, code: 'pending-approval' });
    enroll('revoked', k, 'revoked');
    expect(await hello(new FakeSocket(), 'revoked', k)).toMatchObject({ ok: false, code: 'revoked' });
    enroll('old', k, 'approved', false);
    expect(await hello(new FakeSocket(), 'old', k)).toMatchObject({ ok: false, code: 'enroll-again' });

    enroll('site-a', k, 'approved');
    expect(await hello(new FakeSocket(), 'site-a', keys())).toMatchObject({ ok: false, code: 'key-mismatch' });
    // The enrolled public keys, signed with another key.
    const forger = keys();
    const withEnrolledKeys = (h: SiteHello) => ({ ...h, boxPublicKey: toBase64(k.box.publicKey), signPublicKey: toBase64(k.sign.publicKey) });
    expect(await hello(new FakeSocket(), 'site-a', forger, withEnrolledKeys)).toMatchObject({ ok: false, code: 'bad-signature' });
    expect(await hello(new FakeSocket(), 'site-a', k, (h) => ({ ...h, protocolVersion: PROTOCOL_VERSION + 1 }))).toMatchObject({
      ok: false,
      code: 'protocol-version',
    });
    expect(await hello(new FakeSocket(), 'site-a', k)).toMatchObject({ ok: true });
  });

  it('refuses a hello without a challenge on its connection (no-challenge)', async () => {
    const { sessions, enroll, keys, hello } = setUp();
    const k = keys();
    enroll('site-a', k, 'approved');
    const socket = new FakeSocket();
    let captured: SiteHello | undefined;
    await hello(socket, 'site-a', k, (h) => (captured = h));
    // Replayed on another connection, or twice on the same one: the challenge was single use.
    expect(await sessions.hello(new FakeSocket(), captured!)).toMatchObject({ ok: false, code: 'no-challenge' });
    expect(await sessions.hello(socket, captured!)).toMatchObject({ ok: false, code: 'no-challenge' });
  });
});
