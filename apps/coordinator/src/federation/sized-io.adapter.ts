import { INestApplicationContext } from '@nestjs/common';
import { IoAdapter } from '@nestjs/platform-socket.io';
import type { IncomingMessage } from 'node:http';
import type { Server, ServerOptions } from 'socket.io';
import * as parser from 'socket.io-parser';
import { ConnectionLimits, type SocketLimits } from './connection-limits';

/**
 * The most binary attachments one socket.io packet from a site may announce. Our protocol sends
 * at most one buffer per message (a chunk of an upload). socket.io's parser otherwise accepts 10
 * and holds every attachment received until the last one arrives: a peer announcing 10 and sending
 * 9 made the coordinator hold 9 x the message limit per connection, before any authentication.
 * With one, a packet is complete when its only buffer arrives, so nothing is held half-open.
 */
export const MAX_ATTACHMENTS_PER_PACKET = 1;

/** socket.io's parser with the attachment limit above (one decoder per connection). */
class LimitedDecoder extends parser.Decoder {
  constructor() {
    super({ maxAttachments: MAX_ATTACHMENTS_PER_PACKET });
  }
}

const limitedParser = { protocol: parser.protocol, Encoder: parser.Encoder, Decoder: LimitedDecoder };

/**
 * The sites' socket.io server with what an unauthenticated peer may cost bounded:
 *
 * - socket.io silently closes a connection whose message exceeds maxHttpBufferSize: weights travel
 *   in chunks below this limit (libs/protocol chunked-transfer), so it stays small whatever the
 *   model size, and an oversized message costs a connection, not memory;
 * - a packet may announce at most MAX_ATTACHMENTS_PER_PACKET binary attachments;
 * - connections are capped per remote address and in total, checked at the handshake
 *   (`allowRequest`) against the open engine.io connections;
 * - a browser's cross-site request is refused unless its Origin is listed (sites are Node
 *   processes and send none; the dashboard does not use this server);
 * - the gateway disconnects a connection that has not authenticated within the hello deadline.
 */
export class SizedIoAdapter extends IoAdapter {
  readonly limits: ConnectionLimits;

  constructor(
    app: INestApplicationContext,
    private readonly maxMessageBytes: number,
    private readonly socketLimits: SocketLimits,
    private readonly onRefused: (reason: string, address: string) => void = () => undefined,
  ) {
    super(app);
    this.limits = new ConnectionLimits(socketLimits);
  }

  override createIOServer(port: number, options?: ServerOptions): unknown {
    const server = super.createIOServer(port, {
      ...options,
      maxHttpBufferSize: this.maxMessageBytes,
      // Training and evaluation keep an event loop busy for a while between batches.
      pingTimeout: 60_000,
      pingInterval: 25_000,
      parser: limitedParser,
      allowRequest: (req: IncomingMessage, callback: (err: string | null | undefined, success: boolean) => void) => this.allowRequest(req, callback),
    }) as Server;
    // Count engine.io connections by address (the namespace's sockets come and go on top of them).
    server.engine.on('connection', (conn: { request: IncomingMessage; on(event: 'close', f: () => void): void }) => {
      const address = addressOf(conn.request);
      this.limits.opened(address);
      conn.on('close', () => this.limits.closed(address));
    });
    return server;
  }

  private allowRequest(req: IncomingMessage, callback: (err: string | null | undefined, success: boolean) => void): void {
    const origin = req.headers.origin;
    if (origin !== undefined && !this.socketLimits.allowedOrigins.includes(origin)) {
      this.onRefused(`origin ${origin} is not allowed`, addressOf(req));
      callback('origin not allowed', false);
      return;
    }
    const refusal = this.limits.refusal(addressOf(req));
    if (refusal) {
      this.onRefused(refusal, addressOf(req));
      callback(refusal, false);
      return;
    }
    callback(null, true);
  }
}

function addressOf(req: IncomingMessage): string {
  return req.socket?.remoteAddress ?? 'unknown';
}
