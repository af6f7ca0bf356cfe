import type { Socket } from 'socket.io-client';
import {
  ChunkEvents,
  CoordinatorToSiteEvents,
  EmitWithAck,
  ProgressEvents,
  SiteEvents,
  SiteToCoordinatorEvent,
  SiteToCoordinatorEvents,
  SiteToCoordinatorPayload,
} from '@histofed/protocol';

/** The site's socket, typed by the protocol's contract (libs/protocol events.ts): what each side may emit. */
export type SiteSocket = Socket<CoordinatorToSiteEvents, SiteToCoordinatorEvents>;

/**
 * Typed requests to the coordinator over the site's socket: each with its timeout, resolving with
 * the raw ack for the caller to validate (the protocol helpers do). One sender per event, so an
 * event added to the contract is a compile error here until the site can send it.
 */
export function coordinatorRequests(socket: SiteSocket, timeoutMs: (event: SiteToCoordinatorEvent) => number): EmitWithAck {
  const senders: { [E in SiteToCoordinatorEvent]: (payload: SiteToCoordinatorPayload<E>) => Promise<unknown> } = {
    [SiteEvents.challenge]: (p) => socket.timeout(timeoutMs(SiteEvents.challenge)).emitWithAck(SiteEvents.challenge, p),
    [SiteEvents.hello]: (p) => socket.timeout(timeoutMs(SiteEvents.hello)).emitWithAck(SiteEvents.hello, p),
    [SiteEvents.update]: (p) => socket.timeout(timeoutMs(SiteEvents.update)).emitWithAck(SiteEvents.update, p),
    [SiteEvents.taskFailed]: (p) => socket.timeout(timeoutMs(SiteEvents.taskFailed)).emitWithAck(SiteEvents.taskFailed, p),
    [ChunkEvents.uploadChunk]: (p) => socket.timeout(timeoutMs(ChunkEvents.uploadChunk)).emitWithAck(ChunkEvents.uploadChunk, p),
    [ChunkEvents.fetchChunk]: (p) => socket.timeout(timeoutMs(ChunkEvents.fetchChunk)).emitWithAck(ChunkEvents.fetchChunk, p),
    [ProgressEvents.progress]: (p) => socket.timeout(timeoutMs(ProgressEvents.progress)).emitWithAck(ProgressEvents.progress, p),
  };
  return (event, payload) => senders[event](payload);
}
