import { z } from 'zod';
import type { Ack } from './messages';
import { refusalSchema } from './refusals';
import { binarySchema } from './schemas';

/**
 * Chunked binary transfer: models far larger than one socket.io message travel as a sequence of
 * small binary messages, so the server's maxHttpBufferSize can stay small (a message over it
 * silently closes the connection).
 *   upload   (site -> coordinator, push):  site:upload-chunk, one ack per chunk
 *   download (coordinator -> site, pull):  the coordinator announces a BlobRef (metadata only);
 *                                          the site asks site:fetch-chunk, the ack carries the bytes
 * The logic lives in chunked-transfer.ts; this file holds the wire format.
 */

/** Event names, one place. Both are emitted by the site (with an ack). */
export const ChunkEvents = {
  uploadChunk: 'site:upload-chunk',
  fetchChunk: 'site:fetch-chunk',
} as const;

const MiB = 1024 * 1024;

/** Default chunk payload: 4 MiB. */
export const DEFAULT_CHUNK_BYTES = 4 * MiB;

/**
 * Bytes a chunk message may carry besides its payload (JSON metadata of ~200 bytes, socket.io and
 * engine.io framing): generous on purpose.
 */
export const CHUNK_MESSAGE_OVERHEAD_BYTES = 64 * 1024;

/**
 * Recommended socket.io `maxHttpBufferSize` once weights travel in chunks: 8 MiB, i.e. a
 * DEFAULT_CHUNK_BYTES chunk plus overhead, with room for the HTTP long-polling transport, which
 * sends binary as base64 (4/3 of the size: 4 MiB -> 5.4 MiB).
 */
export const RECOMMENDED_MAX_MESSAGE_BYTES = 8 * MiB;

/** Largest blob a downloader accepts unless told otherwise (refused before allocating). */
export const DEFAULT_MAX_TRANSFER_BYTES = 1024 * MiB;

/** Content address: lowercase hex SHA-256 (fl-core sha256Hex). */
export const sha256HexSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be a sha256: 64 lowercase hex characters');

const byteCount = z.number().int().min(0);

/** Chunks needed for `totalBytes` at `chunkBytes` per chunk; an empty blob is one empty chunk. */
export function chunkCount(totalBytes: number, chunkBytes: number): number {
  return Math.max(1, Math.ceil(totalBytes / chunkBytes));
}

// ---- upload: site -> coordinator ------------------------------------------------------------

/**
 * One chunk of an upload. Every chunk repeats the upload's metadata (count, totalBytes, sha256);
 * the receiver refuses a chunk whose metadata differs from chunk 0's.
 */
export const uploadChunkSchema = z.object({
  uploadId: z.string().uuid(),
  index: z.number().int().min(0),
  count: z.number().int().min(1),
  totalBytes: byteCount,
  sha256: sha256HexSchema,
  data: binarySchema,
});
export type UploadChunk = z.infer<typeof uploadChunkSchema>;

/** Ack of an upload chunk: the generic `{ ok: true } | { ok: false, error }` (messages.ts ackSchema). */
export type UploadChunkAck = Ack;

// ---- download: coordinator -> site ----------------------------------------------------------

/**
 * What the coordinator sends instead of the bytes: enough for the site to fetch every chunk,
 * check each chunk's length, preallocate once and verify the hash.
 */
export const blobRefSchema = z
  .object({
    sha256: sha256HexSchema,
    totalBytes: byteCount,
    chunkBytes: z.number().int().min(1),
    count: z.number().int().min(1),
  })
  .superRefine((ref, ctx) => {
    const expected = chunkCount(ref.totalBytes, ref.chunkBytes);
    if (ref.count !== expected) {
      ctx.addIssue({
        code: 'custom',
        path: ['count'],
        message: `must be ${expected} for ${ref.totalBytes} bytes in chunks of ${ref.chunkBytes} bytes`,
      });
    }
  });
export type BlobRef = z.infer<typeof blobRefSchema>;

/** The site asks for one chunk of an offered blob. */
export const fetchChunkSchema = z.object({
  sha256: sha256HexSchema,
  index: z.number().int().min(0),
});
export type FetchChunk = z.infer<typeof fetchChunkSchema>;

export const fetchChunkAckSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), data: binarySchema }),
  refusalSchema,
]);
export type FetchChunkAck = z.infer<typeof fetchChunkAckSchema>;
