import { Injectable } from '@nestjs/common';
import { open } from 'node:fs/promises';
import { BlobRef, BlobServer, ChunkEvents, FetchChunkAck, chunkCount, fetchChunkSchema, validateMessage } from '@histofed/protocol';

/** A file offered to one site: on the coordinator's disk (read chunk by chunk), or small and in memory. */
export type SiteFile = { readonly sha256: string; readonly bytes: number } & ({ readonly file: string } | { readonly data: Uint8Array });

interface OfferedFile {
  readonly source: SiteFile;
  readonly bytes: number;
  readonly chunkBytes: number;
  /** Offers holding it (two runs' packages may share nothing, but one may be offered twice). */
  holders: number;
}

/**
 * What sites fetch in chunks (site:fetch-chunk):
 * - the global models of training tasks, held in memory; the last few offered only (BlobServer's
 *   bound): a site asking for an older one is told so. Any authenticated site may fetch them;
 * - the files of a finished run's final models (issue 15), offered to ONE site each and read from
 *   the coordinator's disk as they are asked for (nothing held in memory): another site asking for
 *   the same hash is refused, so a site never gets another site's personalized model.
 */
@Injectable()
export class ModelDistribution {
  private readonly blobs = new BlobServer();
  private readonly siteFiles = new Map<string, Map<string, OfferedFile>>();

  offer(bytes: Uint8Array): BlobRef {
    return this.blobs.offer(bytes);
  }

  serve(request: unknown): FetchChunkAck {
    return this.blobs.serve(request);
  }

  /**
   * Offers files (by their SHA-256) to `siteId` until the returned function is called. The caller
   * has hashed them; a file that changes on disk meanwhile fails the site's hash check.
   */
  offerFilesTo(siteId: string, files: readonly SiteFile[], chunkBytes: number): () => void {
    let held = this.siteFiles.get(siteId);
    if (!held) this.siteFiles.set(siteId, (held = new Map()));
    const mine = held;
    for (const f of files) {
      const existing = mine.get(f.sha256);
      if (existing) existing.holders++;
      else mine.set(f.sha256, { source: f, bytes: f.bytes, chunkBytes, holders: 1 });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const f of files) {
        const o = mine.get(f.sha256);
        if (o && --o.holders <= 0) mine.delete(f.sha256);
      }
      if (mine.size === 0 && this.siteFiles.get(siteId) === mine) this.siteFiles.delete(siteId);
    };
  }

  /** Files offered to the site right now (for tests and logs). */
  filesOfferedTo(siteId: string): number {
    return this.siteFiles.get(siteId)?.size ?? 0;
  }

  /** Handles one raw `site:fetch-chunk` of an authenticated site: a training model, or a file offered to it. */
  async serveTo(siteId: string, request: unknown): Promise<FetchChunkAck> {
    const v = validateMessage(fetchChunkSchema, request, ChunkEvents.fetchChunk);
    if (!v.ok) return { ok: false, error: v.reason };
    const offered = this.siteFiles.get(siteId)?.get(v.value.sha256);
    if (!offered || this.blobs.has(v.value.sha256)) return this.blobs.serve(request);
    const { index, sha256 } = v.value;
    const count = chunkCount(offered.bytes, offered.chunkBytes);
    if (index >= count) {
      return { ok: false, error: `${ChunkEvents.fetchChunk}: file ${sha256}: index ${index} out of range, the file has ${count} chunks` };
    }
    const start = index * offered.chunkBytes;
    const length = Math.min(offered.chunkBytes, offered.bytes - start);
    const source = offered.source;
    if ('data' in source) return { ok: true, data: source.data.subarray(start, start + length) };
    const data = Buffer.alloc(length);
    const handle = await open(source.file, 'r');
    try {
      let read = 0;
      while (read < length) {
        const { bytesRead } = await handle.read(data, read, length - read, start + read);
        if (bytesRead === 0) break;
        read += bytesRead;
      }
      // A file cut short since it was hashed: the site sees a short chunk and refuses it.
      return { ok: true, data: read === length ? data : data.subarray(0, read) };
    } finally {
      await handle.close();
    }
  }
}
