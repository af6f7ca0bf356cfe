/**
 * Chunked binary transfer (libs/protocol chunked-transfer.ts) over a REAL socket.io server and
 * client in this process: a 30 M-parameter float32 model (120 MB) travels both ways through a
 * server whose maxHttpBufferSize is 8 MiB, in 4 MiB chunks, and arrives byte-identical.
 * (Lives here, not beside the code: libs may not import socket.io, specs included — eslint.config.cjs.)
 */
import { createServer } from 'node:http';
import { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Server, Socket as ServerSocket } from 'socket.io';
import { io as connect, Socket as ClientSocket } from 'socket.io-client';
import { sha256Hex } from '@histofed/fl-core';
import {
  BlobServer,
  ChunkEvents,
  DEFAULT_CHUNK_BYTES,
  FetchChunk,
  RECOMMENDED_MAX_MESSAGE_BYTES,
  TransferError,
  UploadChunk,
  UploadReassembler,
  chunkBytesForLimit,
  downloadInChunks,
  uploadInChunks,
} from '@histofed/protocol';

const MiB = 1024 * 1024;
const LIMIT = RECOMMENDED_MAX_MESSAGE_BYTES; // the server's maxHttpBufferSize: 8 MiB
const ACK_TIMEOUT_MS = 30_000;

/** `parameters` float32 values with seeded pseudo-random bit patterns (xorshift32), as bytes. */
function seededModel(parameters: number, seed: number): Uint8Array {
  const params = new Float32Array(parameters);
  const words = new Uint32Array(params.buffer);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  return new Uint8Array(params.buffer);
}

const sizeOf = (data: unknown): number =>
  typeof data === 'string' ? Buffer.byteLength(data) : data instanceof ArrayBuffer || ArrayBuffer.isView(data) ? data.byteLength : 0;

let io: Server;
let port: number;
const blobs = new BlobServer();
const uploadsBySocket = new Map<string, UploadReassembler>();
/** Largest engine.io packet the server received / the clients received. */
let largestToServer = 0;
let largestToClients = 0;
/** When set, the server flips a byte in the chunk with this index before answering a fetch. */
let tamperFetchIndex: number | null = null;
const clients: ClientSocket[] = [];

beforeAll(async () => {
  const http = createServer();
  io = new Server(http, { maxHttpBufferSize: LIMIT });
  io.on('connection', (socket: ServerSocket) => {
    const uploads = new UploadReassembler({ maxTotalBytes: 256 * MiB, maxChunkBytes: DEFAULT_CHUNK_BYTES, maxOpenUploads: 2 });
    uploadsBySocket.set(socket.id, uploads);
    socket.conn.on('packet', (packet: { data?: unknown }) => {
      largestToServer = Math.max(largestToServer, sizeOf(packet.data));
    });
    socket.on(ChunkEvents.uploadChunk, (raw: unknown, ack: (a: unknown) => void) => ack(uploads.accept(raw)));
    socket.on(ChunkEvents.fetchChunk, (raw: unknown, ack: (a: unknown) => void) => {
      const answer = blobs.serve(raw);
      if (answer.ok && tamperFetchIndex !== null && (raw as FetchChunk).index === tamperFetchIndex) {
        const data = Buffer.from(answer.data);
        data[data.length >> 1] ^= 0x10;
        return ack({ ok: true, data });
      }
      ack(answer);
    });
    socket.on('disconnect', () => uploads.clear());
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  port = (http.address() as AddressInfo).port;
});

afterAll(async () => {
  // Close every client's transport before the server, so no polling request outlives the test.
  await Promise.all(
    clients.map(async (c) => {
      const engine = c.io.engine;
      const closed = engine.readyState === 'closed' ? Promise.resolve() : new Promise<void>((resolve) => engine.once('close', () => resolve()));
      c.disconnect();
      await closed;
    }),
  );
  await io.close();
});

/** A connected client (websocket only, as the site client), and the disconnect reasons it sees. */
async function connectClient(transports: ('websocket' | 'polling')[] = ['websocket']) {
  const client = connect(`http://127.0.0.1:${port}`, { transports, reconnection: false, forceNew: true });
  clients.push(client);
  const disconnects: string[] = [];
  client.on('disconnect', (reason) => disconnects.push(reason));
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('connect_error', reject);
  });
  client.io.engine.on('packet', (packet) => {
    largestToClients = Math.max(largestToClients, sizeOf(packet.data));
  });
  const upload = (event: typeof ChunkEvents.uploadChunk, chunk: UploadChunk) => client.timeout(ACK_TIMEOUT_MS).emitWithAck(event, chunk);
  const fetch = (request: FetchChunk) => client.timeout(ACK_TIMEOUT_MS).emitWithAck(ChunkEvents.fetchChunk, request);
  return { client, disconnects, upload, fetch, uploads: () => uploadsBySocket.get(client.id!)! };
}

describe('chunked transfer over socket.io (maxHttpBufferSize 8 MiB)', () => {
  it('moves a 30 M-parameter float32 model (120 MB) both ways byte-identical, no message over the limit', async () => {
    let t = performance.now();
    const model = seededModel(30_000_000, 0x9e3779b9);
    const sha256 = sha256Hex(model);
    const prepareMs = performance.now() - t;
    expect(model.length).toBe(120_000_000);
    const { client, disconnects, upload, fetch, uploads } = await connectClient();
    const chunkBytes = chunkBytesForLimit(LIMIT);
    expect(chunkBytes).toBe(DEFAULT_CHUNK_BYTES);
    largestToServer = 0;
    largestToClients = 0;

    // site -> coordinator
    t = performance.now();
    const up = await uploadInChunks(upload, model, { chunkBytes });
    const received = uploads().take(up.uploadId, sha256);
    const uploadMs = performance.now() - t;
    expect(up).toEqual({ uploadId: expect.any(String), sha256, totalBytes: 120_000_000, count: 29 });
    expect(received.ok).toBe(true);
    if (!received.ok) return;
    expect(sha256Hex(received.value)).toBe(sha256);
    expect(Buffer.compare(received.value, model)).toBe(0);
    expect(uploads().bufferedBytes).toBe(0);

    // coordinator -> site
    t = performance.now();
    const ref = blobs.offer(model, chunkBytes);
    const downloaded = await downloadInChunks(fetch, ref, { what: 'global model' });
    const downloadMs = performance.now() - t;
    expect(ref).toEqual({ sha256, totalBytes: 120_000_000, chunkBytes, count: 29 });
    expect(sha256Hex(downloaded)).toBe(sha256);
    expect(Buffer.compare(downloaded, model)).toBe(0);

    // Nothing was too large: the connection is intact on both ends, and the largest packet either
    // way was one 4 MiB chunk.
    expect(client.connected).toBe(true);
    expect(io.sockets.sockets.has(client.id!)).toBe(true);
    expect(disconnects).toEqual([]);
    expect(largestToServer).toBe(DEFAULT_CHUNK_BYTES);
    expect(largestToClients).toBe(DEFAULT_CHUNK_BYTES);
    blobs.retire(sha256);
    console.log(
      `30 M parameters (120 MB): generate+hash ${prepareMs.toFixed(0)} ms, upload ${uploadMs.toFixed(0)} ms, ` +
        `download ${downloadMs.toFixed(0)} ms, round trip ${(uploadMs + downloadMs).toFixed(0)} ms`,
    );
  }, 120_000);

  it('a chunk over maxHttpBufferSize would close the connection; chunkBytes keeps every message under it', async () => {
    const blob = seededModel((9 * MiB) / 4, 7); // 9 MiB: more than the 8 MiB limit
    const oversized = await connectClient();
    // One 9 MiB chunk: socket.io closes the connection and no ack ever comes.
    const attempt = uploadInChunks(oversized.upload, blob, { chunkBytes: blob.length });
    await expect(attempt).rejects.toThrow(TransferError);
    await expect(attempt).rejects.toThrow(/chunk 0\/1: no acknowledgement/);
    expect(oversized.client.connected).toBe(false);
    expect(oversized.disconnects).toHaveLength(1);

    // The same bytes in chunks sized for the limit arrive, and the connection stays up.
    const chunked = await connectClient();
    const up = await uploadInChunks(chunked.upload, blob, { chunkBytes: chunkBytesForLimit(LIMIT) });
    expect(up.count).toBe(3);
    const received = chunked.uploads().take(up.uploadId, sha256Hex(blob));
    expect(received.ok && Buffer.compare(received.value, blob)).toBe(0);
    expect(chunked.client.connected).toBe(true);
    expect(chunked.disconnects).toEqual([]);
  }, 60_000);

  it('a tampered chunk is caught by the sha256 check, on upload and on download', async () => {
    const blob = seededModel((20 * MiB) / 4, 11); // 5 chunks
    const { client, upload, fetch, uploads } = await connectClient();

    const tampering = (event: typeof ChunkEvents.uploadChunk, chunk: UploadChunk) => {
      if (chunk.index !== 3) return upload(event, chunk);
      const data = Buffer.from(chunk.data);
      data[12345] ^= 0x01;
      return upload(event, { ...chunk, data });
    };
    await expect(uploadInChunks(tampering, blob)).rejects.toThrow(/chunk 4\/5: refused by the receiver: .*sha256 mismatch/);
    expect(uploads().openUploads).toBe(0);
    expect(uploads().bufferedBytes).toBe(0);

    const ref = blobs.offer(blob);
    tamperFetchIndex = 2;
    try {
      await expect(downloadInChunks(fetch, ref)).rejects.toThrow(
        new RegExp(`^blob ${ref.sha256}: sha256 mismatch: the ${blob.length} bytes received hash to [0-9a-f]{64}, expected ${ref.sha256}$`),
      );
    } finally {
      tamperFetchIndex = null;
    }
    // Untampered, the same blob downloads fine on the same connection.
    expect(sha256Hex(await downloadInChunks(fetch, ref))).toBe(ref.sha256);
    expect(client.connected).toBe(true);
    blobs.retire(ref.sha256);
  }, 60_000);

  it('stays under the limit over HTTP long-polling too (binary as base64)', async () => {
    const blob = seededModel((12 * MiB) / 4, 13);
    const { client, disconnects, upload, fetch, uploads } = await connectClient(['polling']);
    const up = await uploadInChunks(upload, blob);
    const received = uploads().take(up.uploadId, up.sha256);
    expect(received.ok && Buffer.compare(received.value, blob)).toBe(0);
    const ref = blobs.offer(blob);
    expect(Buffer.compare(await downloadInChunks(fetch, ref), blob)).toBe(0);
    expect(client.connected).toBe(true);
    expect(disconnects).toEqual([]);
    blobs.retire(ref.sha256);
  }, 60_000);
});
