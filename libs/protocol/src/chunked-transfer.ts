import { createHash, Hash, randomUUID } from 'node:crypto';
import { HistoFedError, ValidationError, sha256Hex } from '@histofed/fl-core';
import {
  BlobRef,
  CHUNK_MESSAGE_OVERHEAD_BYTES,
  ChunkEvents,
  DEFAULT_CHUNK_BYTES,
  DEFAULT_MAX_TRANSFER_BYTES,
  FetchChunk,
  FetchChunkAck,
  UploadChunk,
  UploadChunkAck,
  blobRefSchema,
  chunkCount,
  fetchChunkAckSchema,
  fetchChunkSchema,
  uploadChunkSchema,
} from './chunk-schemas';
import { ackSchema } from './messages';
import { Validated, validateMessage } from './validate';

/**
 * Chunked binary transfer over any request/acknowledge channel (socket.io's emitWithAck in
 * practice; this file does not import socket.io). Wire format: chunk-schemas.ts.
 *
 * Every function that talks to the network takes the channel as a function, so callers pass
 * `(event, payload) => socket.timeout(ms).emitWithAck(event, payload)`: always with a timeout,
 * since a peer whose handler throws never acknowledges.
 */

/** The peer refused a transfer step (its reason is in the message), or did not answer at all. */
export class TransferError extends HistoFedError {
  /**
   * @param refused the other side answered and refused (sending the same again is refused again),
   *   as opposed to a transfer that got no answer (a connection lost or slow: worth retrying).
   */
  constructor(
    message: string,
    readonly refused = false,
  ) {
    super('TRANSFER', message);
  }
}

/**
 * Largest chunk payload that fits a socket.io message limit (`maxHttpBufferSize`, announced to
 * sites as `maxMessageBytes` in the hello ack), at most `preferred`. Leaves room for the chunk's
 * metadata and for base64 (HTTP long-polling sends binary as base64).
 */
export function chunkBytesForLimit(maxMessageBytes: number, preferred = DEFAULT_CHUNK_BYTES): number {
  const fit = Math.floor(((maxMessageBytes - CHUNK_MESSAGE_OVERHEAD_BYTES) * 3) / 4 / 1024) * 1024;
  if (!Number.isFinite(fit) || fit < 1024) {
    throw new ValidationError(
      `a message limit of ${maxMessageBytes} bytes leaves no room for 1 KiB chunks (needs at least ${CHUNK_MESSAGE_OVERHEAD_BYTES + 1366} bytes)`,
    );
  }
  return Math.min(preferred, fit);
}

function checkChunkBytes(chunkBytes: number): void {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) {
    throw new ValidationError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
  }
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

// ---- upload: sender (site) --------------------------------------------------------------------

/** Sends one chunk and resolves with the raw ack (emitWithAck with a timeout). */
export type UploadChunkEmitter = (event: typeof ChunkEvents.uploadChunk, chunk: UploadChunk) => Promise<unknown>;

export interface UploadOptions {
  /** Payload bytes per chunk (default 4 MiB); must not exceed the receiver's maxChunkBytes. */
  chunkBytes?: number;
  /** Called after each acknowledged chunk. */
  onProgress?: (sentBytes: number, totalBytes: number) => void;
}

export interface UploadResult {
  readonly uploadId: string;
  readonly sha256: string;
  readonly totalBytes: number;
  readonly count: number;
}

/**
 * Uploads `bytes` as `site:upload-chunk` messages, one at a time, each acknowledged before the
 * next is sent. Resolves once the receiver has verified the whole upload (the last ack comes after
 * its sha256 check); the caller then refers to the upload by `uploadId` (and `sha256`).
 * Throws TransferError when the receiver refuses a chunk (with its reason) or does not answer,
 * ValidationError when an ack is malformed. A failed upload is not resumed: start a new one.
 */
export async function uploadInChunks(
  emit: UploadChunkEmitter,
  bytes: Uint8Array,
  opts: UploadOptions = {},
): Promise<UploadResult> {
  const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  checkChunkBytes(chunkBytes);
  const uploadId = randomUUID();
  const sha256 = sha256Hex(bytes);
  const totalBytes = bytes.length;
  const count = chunkCount(totalBytes, chunkBytes);
  for (let index = 0; index < count; index++) {
    const start = index * chunkBytes;
    const data = bytes.subarray(start, Math.min(totalBytes, start + chunkBytes));
    const where = `upload ${uploadId} chunk ${index}/${count}`;
    let raw: unknown;
    try {
      raw = await emit(ChunkEvents.uploadChunk, { uploadId, index, count, totalBytes, sha256, data });
    } catch (e) {
      throw new TransferError(`${where}: no acknowledgement (${errorText(e)})`);
    }
    const ack = validateMessage(ackSchema, raw, `${where} ack`);
    if (!ack.ok) throw new ValidationError(ack.reason);
    if (!ack.value.ok) throw new TransferError(`${where}: refused by the receiver: ${ack.value.error}`, true);
    opts.onProgress?.(start + data.length, totalBytes);
  }
  return { uploadId, sha256, totalBytes, count };
}

// ---- upload: receiver (coordinator) -------------------------------------------------------------

export interface UploadLimits {
  /**
   * Largest upload accepted; refused at chunk 0, before anything is allocated. A function is asked
   * at every new upload (e.g. the size the open round expects from this site; 0 = none expected).
   */
  readonly maxTotalBytes: number | (() => number);
  /** Largest chunk payload accepted (default 4 MiB, DEFAULT_CHUNK_BYTES). */
  readonly maxChunkBytes?: number;
  /** Uploads held at once, in progress or complete but not yet taken (default 2). */
  readonly maxOpenUploads?: number;
  /** An upload without a chunk (or, once complete, without take) for this long is dropped (default 120 s). */
  readonly idleTimeoutMs?: number;
  /** Clock, for tests (default Date.now). */
  readonly now?: () => number;
}

interface OpenUpload {
  readonly id: string;
  readonly count: number;
  readonly totalBytes: number;
  readonly sha256: string;
  readonly buffer: Uint8Array;
  readonly hash: Hash;
  nextIndex: number;
  received: number;
  complete: boolean;
  lastActivity: number;
}

/**
 * Reassembles chunked uploads for ONE connection (create one per socket, `clear()` it on
 * disconnect). Every chunk is validated; a refused chunk discards its whole upload (memory freed)
 * and the ack says why. Memory is bounded: each open upload holds one buffer of its totalBytes,
 * allocated once at chunk 0, so one connection holds at most maxOpenUploads x maxTotalBytes.
 * Idle uploads are dropped lazily (on the next accept/take), so no timer is left running.
 */
export class UploadReassembler {
  private readonly uploads = new Map<string, OpenUpload>();
  private readonly maxTotalBytes: () => number;
  private readonly maxChunkBytes: number;
  private readonly maxOpenUploads: number;
  private readonly idleTimeoutMs: number;
  private readonly now: () => number;

  constructor(limits: UploadLimits) {
    const maxTotal = limits.maxTotalBytes;
    this.maxTotalBytes = typeof maxTotal === 'function' ? maxTotal : () => maxTotal;
    this.maxChunkBytes = limits.maxChunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.maxOpenUploads = limits.maxOpenUploads ?? 2;
    this.idleTimeoutMs = limits.idleTimeoutMs ?? 120_000;
    this.now = limits.now ?? Date.now;
    for (const [name, value] of Object.entries({
      ...(typeof maxTotal === 'number' ? { maxTotalBytes: maxTotal } : {}),
      maxChunkBytes: this.maxChunkBytes,
      maxOpenUploads: this.maxOpenUploads,
      idleTimeoutMs: this.idleTimeoutMs,
    })) {
      if (!Number.isSafeInteger(value) || value < 1) throw new ValidationError(`${name} must be a positive integer, got ${value}`);
    }
  }

  /** Uploads held (in progress or complete, not yet taken). */
  get openUploads(): number {
    return this.uploads.size;
  }

  /** Bytes allocated for held uploads. */
  get bufferedBytes(): number {
    let sum = 0;
    for (const u of this.uploads.values()) sum += u.buffer.length;
    return sum;
  }

  /** Handles one raw `site:upload-chunk` message; the result is the ack to send back. */
  accept(raw: unknown): UploadChunkAck {
    this.expireIdle();
    const v = validateMessage(uploadChunkSchema, raw, ChunkEvents.uploadChunk);
    if (!v.ok) {
      // Discard the upload the malformed chunk claims to belong to, if any.
      const claimed = (raw as { uploadId?: unknown } | null)?.uploadId;
      if (typeof claimed === 'string') this.uploads.delete(claimed);
      return { ok: false, error: v.reason };
    }
    const chunk = v.value;
    const reason = this.check(chunk);
    if (reason !== null) {
      this.uploads.delete(chunk.uploadId);
      return { ok: false, error: `${ChunkEvents.uploadChunk}: upload ${chunk.uploadId} chunk ${chunk.index}/${chunk.count}: ${reason}` };
    }
    let upload = this.uploads.get(chunk.uploadId);
    if (!upload) {
      upload = {
        id: chunk.uploadId,
        count: chunk.count,
        totalBytes: chunk.totalBytes,
        sha256: chunk.sha256,
        buffer: new Uint8Array(chunk.totalBytes),
        hash: createHash('sha256'),
        nextIndex: 0,
        received: 0,
        complete: false,
        lastActivity: this.now(),
      };
      this.uploads.set(upload.id, upload);
    }
    // set() copies, so a Buffer at any byteOffset is fine.
    upload.buffer.set(chunk.data, upload.received);
    upload.hash.update(chunk.data);
    upload.received += chunk.data.length;
    upload.nextIndex++;
    upload.lastActivity = this.now();
    if (upload.nextIndex === upload.count) {
      const actual = upload.hash.digest('hex');
      if (actual !== upload.sha256) {
        this.uploads.delete(upload.id);
        return {
          ok: false,
          error:
            `${ChunkEvents.uploadChunk}: upload ${upload.id}: sha256 mismatch: the ${upload.totalBytes} bytes received hash to ` +
            `${actual}, the sender announced ${upload.sha256}; upload discarded`,
        };
      }
      upload.complete = true;
    }
    return { ok: true };
  }

  /** Why this chunk must be refused, or null. Runs before anything is allocated or copied. */
  private check(c: UploadChunk): string | null {
    const u = this.uploads.get(c.uploadId);
    const size = c.data.length;
    if (!u) {
      if (c.index !== 0) return `unknown upload (never started, refused, expired or already taken): expected index 0 to start it`;
      const limit = this.maxTotalBytes();
      if (limit <= 0) return `no upload is expected on this connection now (no open round awaits one from it)`;
      if (c.totalBytes > limit) return `totalBytes ${c.totalBytes} exceeds the limit of ${limit} bytes`;
    }
    if (size > this.maxChunkBytes) return `chunk of ${size} bytes exceeds the limit of ${this.maxChunkBytes} bytes`;
    if (!u) {
      if (c.totalBytes === 0 && c.count !== 1) return `count must be 1 for an empty upload, got ${c.count}`;
      if (c.count > Math.max(1, c.totalBytes)) return `count ${c.count} is more than totalBytes ${c.totalBytes}: chunks must not be empty`;
      const needed = chunkCount(c.totalBytes, this.maxChunkBytes);
      if (c.count < needed) {
        return `count ${c.count} cannot carry ${c.totalBytes} bytes in chunks of at most ${this.maxChunkBytes} bytes (needs at least ${needed})`;
      }
      if (this.uploads.size >= this.maxOpenUploads) {
        return `too many open uploads on this connection (limit ${this.maxOpenUploads}): finish or abandon one first`;
      }
    } else {
      if (u.complete) return `upload is already complete (${u.count} chunks); start a new upload`;
      if (c.index !== u.nextIndex) return `out of order: expected chunk ${u.nextIndex}, got ${c.index}`;
      if (c.count !== u.count) return `count changed from ${u.count} to ${c.count}`;
      if (c.totalBytes !== u.totalBytes) return `totalBytes changed from ${u.totalBytes} to ${c.totalBytes}`;
      if (c.sha256 !== u.sha256) return `sha256 changed from ${u.sha256} to ${c.sha256}`;
    }
    if (c.index >= c.count) return `index ${c.index} out of range for ${c.count} chunks`;
    const received = u?.received ?? 0;
    const after = received + size;
    const remainingChunks = c.count - 1 - c.index;
    if (remainingChunks === 0) {
      if (after !== c.totalBytes) return `chunks carry ${after} bytes in all, totalBytes says ${c.totalBytes}`;
    } else {
      if (size === 0) return `empty chunk (only an empty upload may have one)`;
      if (after + remainingChunks > c.totalBytes) {
        return `chunks carry ${after} bytes so far, which leaves fewer than one byte for each of the ${remainingChunks} remaining chunks (totalBytes ${c.totalBytes})`;
      }
    }
    return null;
  }

  /**
   * Hands over a complete upload and forgets it. Refuses (with a reason) an unknown or incomplete
   * upload, and one whose hash differs from `expectedSha256` (when given; the upload is then dropped).
   */
  take(uploadId: string, expectedSha256?: string): Validated<Uint8Array> {
    this.expireIdle();
    const u = this.uploads.get(uploadId);
    if (!u) {
      return { ok: false, reason: `upload ${uploadId}: unknown (never started, refused, expired after idling or already taken)` };
    }
    if (!u.complete) {
      return {
        ok: false,
        reason: `upload ${uploadId}: incomplete: ${u.nextIndex} of ${u.count} chunks received (${u.received} of ${u.totalBytes} bytes)`,
      };
    }
    this.uploads.delete(uploadId);
    if (expectedSha256 !== undefined && expectedSha256 !== u.sha256) {
      return { ok: false, reason: `upload ${uploadId}: holds sha256 ${u.sha256}, expected ${expectedSha256}; upload discarded` };
    }
    return { ok: true, value: u.buffer };
  }

  /** Drops one upload (true if it was held). */
  abort(uploadId: string): boolean {
    return this.uploads.delete(uploadId);
  }

  /** Drops everything (call on disconnect). */
  clear(): void {
    this.uploads.clear();
  }

  private expireIdle(): void {
    const now = this.now();
    for (const [id, u] of this.uploads) {
      if (now - u.lastActivity > this.idleTimeoutMs) this.uploads.delete(id);
    }
  }
}

// ---- download: server (coordinator) -----------------------------------------------------------

interface OfferedBlob {
  readonly bytes: Uint8Array;
  readonly ref: BlobRef;
}

/**
 * Offers blobs (the global model) for download by content address. Keeps at most `maxBlobs`
 * (default 4: the current global model and a few previous ones, for sites still fetching);
 * offering one more retires the least recently offered. Holds a reference to the offered bytes,
 * without copying: do not modify them while offered.
 */
export class BlobServer {
  private readonly blobs = new Map<string, OfferedBlob>();

  constructor(readonly maxBlobs = 4) {
    if (!Number.isSafeInteger(maxBlobs) || maxBlobs < 1) throw new ValidationError(`maxBlobs must be a positive integer, got ${maxBlobs}`);
  }

  /**
   * Makes `bytes` fetchable and returns the reference to send instead of them. Offering bytes that
   * are already offered returns the existing reference (with its chunk size) and marks it recent.
   */
  offer(bytes: Uint8Array, chunkBytes = DEFAULT_CHUNK_BYTES): BlobRef {
    checkChunkBytes(chunkBytes);
    const sha256 = sha256Hex(bytes);
    const existing = this.blobs.get(sha256);
    if (existing) {
      this.blobs.delete(sha256);
      this.blobs.set(sha256, existing);
      return existing.ref;
    }
    const ref: BlobRef = { sha256, totalBytes: bytes.length, chunkBytes, count: chunkCount(bytes.length, chunkBytes) };
    this.blobs.set(sha256, { bytes, ref });
    while (this.blobs.size > this.maxBlobs) this.blobs.delete(this.blobs.keys().next().value as string);
    return ref;
  }

  /** Handles one raw `site:fetch-chunk` message; the result is the ack to send back. */
  serve(raw: unknown): FetchChunkAck {
    const v = validateMessage(fetchChunkSchema, raw, ChunkEvents.fetchChunk);
    if (!v.ok) return { ok: false, error: v.reason };
    const { sha256, index } = v.value;
    const blob = this.blobs.get(sha256);
    if (!blob) {
      return {
        ok: false,
        error: `${ChunkEvents.fetchChunk}: blob ${sha256} is not offered (never offered, or retired: the last ${this.maxBlobs} are kept)`,
      };
    }
    const { chunkBytes, count, totalBytes } = blob.ref;
    if (index >= count) {
      return { ok: false, error: `${ChunkEvents.fetchChunk}: blob ${sha256}: index ${index} out of range, the blob has ${count} chunks` };
    }
    const start = index * chunkBytes;
    return { ok: true, data: blob.bytes.subarray(start, Math.min(totalBytes, start + chunkBytes)) };
  }

  /** Stops offering a blob (true if it was offered). */
  retire(sha256: string): boolean {
    return this.blobs.delete(sha256);
  }

  has(sha256: string): boolean {
    return this.blobs.has(sha256);
  }

  /** Blobs currently offered. */
  get size(): number {
    return this.blobs.size;
  }
}

// ---- download: fetcher (site) -----------------------------------------------------------------

/** Requests one chunk and resolves with the raw ack (emitWithAck(ChunkEvents.fetchChunk, ...) with a timeout). */
export type FetchChunkRequester = (request: FetchChunk) => Promise<unknown>;

export interface DownloadOptions {
  /** Refuse a reference announcing more bytes than this, before allocating (default 1 GiB). */
  maxTotalBytes?: number;
  /** Called after each chunk. */
  onProgress?: (receivedBytes: number, totalBytes: number) => void;
  /** Names the blob in errors (default "blob <sha256>"). */
  what?: string;
}

/**
 * Fetches every chunk of `ref` in order, one at a time, into one preallocated buffer; checks each
 * chunk's length and finally the sha256. Throws ValidationError for a malformed reference or ack,
 * a chunk of the wrong length or a hash mismatch; TransferError when the server refuses a chunk
 * (with its reason) or does not answer.
 */
export async function downloadInChunks(
  fetch: FetchChunkRequester,
  ref: BlobRef,
  opts: DownloadOptions = {},
): Promise<Uint8Array> {
  const v = validateMessage(blobRefSchema, ref, opts.what ?? 'blob reference');
  if (!v.ok) throw new ValidationError(v.reason);
  const { sha256, totalBytes, chunkBytes, count } = v.value;
  const what = opts.what ?? `blob ${sha256}`;
  const maxTotalBytes = opts.maxTotalBytes ?? DEFAULT_MAX_TRANSFER_BYTES;
  if (totalBytes > maxTotalBytes) {
    throw new ValidationError(`${what}: announces ${totalBytes} bytes, more than the limit of ${maxTotalBytes} bytes`);
  }
  const out = new Uint8Array(totalBytes);
  const hash = createHash('sha256');
  let offset = 0;
  for (let index = 0; index < count; index++) {
    const expected = Math.min(chunkBytes, totalBytes - offset);
    const where = `${what} chunk ${index}/${count}`;
    let raw: unknown;
    try {
      raw = await fetch({ sha256, index });
    } catch (e) {
      throw new TransferError(`${where}: no answer (${errorText(e)})`);
    }
    const ack = validateMessage(fetchChunkAckSchema, raw, `${where} ack`);
    if (!ack.ok) throw new ValidationError(ack.reason);
    if (!ack.value.ok) throw new TransferError(`${where}: refused by the server: ${ack.value.error}`, true);
    const data = ack.value.data;
    if (data.length !== expected) throw new ValidationError(`${where}: got ${data.length} bytes, expected ${expected}`);
    out.set(data, offset);
    hash.update(data);
    offset += data.length;
    opts.onProgress?.(offset, totalBytes);
  }
  const actual = hash.digest('hex');
  if (actual !== sha256) {
    throw new ValidationError(`${what}: sha256 mismatch: the ${totalBytes} bytes received hash to ${actual}, expected ${sha256}`);
  }
  return out;
}
