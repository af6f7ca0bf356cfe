import { Injectable } from '@nestjs/common';
import { BlobRef, BlobServer, FetchChunkAck } from '@histofed/protocol';

/**
 * The global models sites are fetching right now, served in chunks (site:fetch-chunk). Keeps the
 * last few offered models only (BlobServer's bound): a site asking for an older one is told so.
 */
@Injectable()
export class ModelDistribution {
  private readonly blobs = new BlobServer();

  offer(bytes: Uint8Array): BlobRef {
    return this.blobs.offer(bytes);
  }

  serve(request: unknown): FetchChunkAck {
    return this.blobs.serve(request);
  }
}
