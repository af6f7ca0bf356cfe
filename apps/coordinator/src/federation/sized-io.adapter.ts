import { INestApplicationContext } from '@nestjs/common';
import { IoAdapter } from '@nestjs/platform-socket.io';
import type { ServerOptions } from 'socket.io';

/**
 * socket.io silently closes a connection whose message exceeds maxHttpBufferSize (1 MB by
 * default). Weights travel in chunks below this limit (libs/protocol chunked-transfer), so it
 * stays small whatever the model size: an oversized message costs a connection, not memory.
 */
export class SizedIoAdapter extends IoAdapter {
  constructor(
    app: INestApplicationContext,
    private readonly maxMessageBytes: number,
  ) {
    super(app);
  }

  override createIOServer(port: number, options?: ServerOptions): unknown {
    return super.createIOServer(port, {
      ...options,
      maxHttpBufferSize: this.maxMessageBytes,
      // Training and evaluation keep an event loop busy for a while between batches.
      pingTimeout: 60_000,
      pingInterval: 25_000,
    });
  }
}
