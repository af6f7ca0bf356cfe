/**
 * What the chaos benchmark's rogue client tries, and how often the coordinator said yes. Every
 * attempt is a real message on a real connection; an attempt counts as accepted only when the
 * coordinator acknowledged it with ok: true.
 */
import { io } from 'socket.io-client';
import { randomUUID } from 'node:crypto';
import { PROTOCOL_VERSION, PreparedUpdate, SITE_NAMESPACE, SiteEvents, ChunkEvents, TrainTask } from '@histofed/protocol';
import { RogueSite } from '@histofed/harness';

export type AttackKind = 'forged' | 'replayed' | 'malformed' | 'oversized';

export class AttackLedger {
  readonly attempts: Record<AttackKind, number> = { forged: 0, replayed: 0, malformed: 0, oversized: 0 };
  readonly accepted: Record<AttackKind, number> = { forged: 0, replayed: 0, malformed: 0, oversized: 0 };
  readonly reasons: string[] = [];

  record(kind: AttackKind, what: string, ack: unknown): void {
    this.attempts[kind]++;
    const ok = typeof ack === 'object' && ack !== null && (ack as { ok?: unknown }).ok === true;
    if (ok) this.accepted[kind]++;
    this.reasons.push(`${kind} ${what}: ${ok ? 'ACCEPTED' : String((ack as { error?: unknown })?.error ?? 'no answer')}`);
  }
}

const ackOf = (p: Promise<unknown>): Promise<unknown> => p.catch((e: unknown) => ({ ok: false, error: (e as Error).message }));

/** Attacks made while the rogue is a participant of `task` and has just delivered `genuine`. */
export async function attackDuringRound(rogue: RogueSite, task: TrainTask, genuine: PreparedUpdate, previous: PreparedUpdate | undefined, ledger: AttackLedger): Promise<void> {
  // Replays: the same signed update again (fresh upload), and last round's.
  ledger.record('replayed', `round ${task.config.round} again`, await ackOf(rogue.deliver('replay', genuine)));
  if (previous) ledger.record('replayed', `round ${previous.message.round} in round ${task.config.round}`, await ackOf(rogue.deliver('replay old', previous)));
  // Forged: signed with a key that is not the enrolled one.
  const impostor = { ...RogueSite.impostor(rogue.siteId), boxPublicKey: rogue.signer.boxPublicKey, signPublicKey: rogue.signer.signPublicKey };
  ledger.record('forged', 'update signed by another key', await ackOf(rogue.deliver('forged', rogue.update(task, { signer: impostor }))));
  // Another site's id on this connection.
  ledger.record('forged', 'update claiming site-1', await ackOf(rogue.deliver('claims site-1', genuine, { siteId: 'site-1' })));
  // Malformed messages of every kind a site may send.
  const malformed: [string, string, unknown][] = [
    ['update that is a string', SiteEvents.update, 'not an update'],
    ['update naming an unknown upload', SiteEvents.update, { ...genuine.message, uploadId: randomUUID() }],
    ['chunk with a negative index', ChunkEvents.uploadChunk, { uploadId: randomUUID(), index: -1, count: 1, totalBytes: 1, sha256: 'a'.repeat(64), data: Buffer.alloc(1) }],
    ['chunk out of order', ChunkEvents.uploadChunk, { uploadId: randomUUID(), index: 3, count: 5, totalBytes: 10, sha256: 'a'.repeat(64), data: Buffer.alloc(2) }],
    ['fetch of an unknown model', ChunkEvents.fetchChunk, { sha256: 'b'.repeat(64), index: 0 }],
    ['task failure without fields', SiteEvents.taskFailed, { reason: 7 }],
  ];
  for (const [what, event, payload] of malformed) ledger.record('malformed', what, await ackOf(rogue.send(what, event, payload)));
  // Oversized: an upload announcing more than the coordinator accepts, a chunk over the chunk limit.
  ledger.record(
    'oversized',
    'upload announcing 2 GiB',
    await ackOf(rogue.send('huge upload', ChunkEvents.uploadChunk, { uploadId: randomUUID(), index: 0, count: 512, totalBytes: 2 ** 31, sha256: 'c'.repeat(64), data: Buffer.alloc(4 * 2 ** 20) })),
  );
  ledger.record(
    'oversized',
    '7 MiB chunk',
    await ackOf(rogue.send('big chunk', ChunkEvents.uploadChunk, { uploadId: randomUUID(), index: 0, count: 1, totalBytes: 7 * 2 ** 20, sha256: 'd'.repeat(64), data: Buffer.alloc(7 * 2 ** 20) })),
  );
}

/** Attacks on the connection itself: impersonation, unchallenged hello, a message over the socket limit. */
export async function attackConnections(url: string, ledger: AttackLedger): Promise<void> {
  const impostor = new RogueSite(url, 'site-1', async () => undefined);
  ledger.record('forged', 'hello as site-1 with other keys', await ackOf(impostor.hello(10)));
  impostor.close();

  const raw = io(`${url}${SITE_NAMESPACE}`, { transports: ['websocket'], reconnection: false });
  const hello = {
    protocolVersion: PROTOCOL_VERSION,
    siteId: 'site-2',
    boxPublicKey: Buffer.alloc(32, 1).toString('base64'),
    signPublicKey: Buffer.alloc(32, 2).toString('base64'),
    signature: Buffer.alloc(64, 3).toString('base64'),
    backend: 'none',
    software: 'replayed hello',
    trainSamples: 1,
    validationSamples: 0,
  };
  ledger.record('replayed', 'hello without a fresh challenge', await ackOf(raw.timeout(10_000).emitWithAck(SiteEvents.hello, hello)));
  ledger.record('malformed', 'hello with a bad key', await ackOf(raw.timeout(10_000).emitWithAck(SiteEvents.hello, { ...hello, boxPublicKey: 'AAAA' })));
  // Over the 8 MiB socket message limit: socket.io closes the connection; nothing is acknowledged.
  ledger.record('oversized', '9 MiB socket message', await ackOf(raw.timeout(10_000).emitWithAck(SiteEvents.update, { blob: Buffer.alloc(9 * 2 ** 20) })));
  raw.disconnect();
}
