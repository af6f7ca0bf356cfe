import { ChunkEvents, SiteEvents } from '@histofed/protocol';
import { SiteSocket, coordinatorRequests } from './coordinator-channel';

/** The emitting side of a socket.io client socket: records the event, payload and timeout of each request. */
function fakeSocket() {
  const sent: { event: string; payload: unknown; timeoutMs: number }[] = [];
  const socket = {
    timeout: (timeoutMs: number) => ({
      emitWithAck: async (event: string, payload: unknown) => {
        sent.push({ event, payload, timeoutMs });
        return { ok: true, echo: event };
      },
    }),
  };
  return { socket: socket as unknown as SiteSocket, sent };
}

describe('coordinatorRequests', () => {
  it('sends each event as itself, with its payload and the timeout chosen for it, and resolves with the raw ack', async () => {
    const { socket, sent } = fakeSocket();
    const send = coordinatorRequests(socket, (event) => (event === SiteEvents.update ? 600 : 60));
    expect(await send(SiteEvents.challenge, { siteId: 'site-a' })).toEqual({ ok: true, echo: SiteEvents.challenge });
    await send(ChunkEvents.fetchChunk, { sha256: 'a'.repeat(64), index: 2 });
    await send(SiteEvents.update, {
      runId: '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e',
      round: 1,
      kind: 'round',
      siteId: 'site-a',
      nonce: 'n',
      uploadId: '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e',
      sealedSha256: 'b'.repeat(64),
      sealedBytes: 3,
      signature: 's',
    });
    expect(sent.map(({ event, timeoutMs }) => [event, timeoutMs])).toEqual([
      [SiteEvents.challenge, 60],
      [ChunkEvents.fetchChunk, 60],
      [SiteEvents.update, 600],
    ]);
    expect(sent[1].payload).toEqual({ sha256: 'a'.repeat(64), index: 2 });
  });
});
