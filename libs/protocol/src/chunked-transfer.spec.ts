import { randomUUID } from 'node:crypto';
import { ValidationError, sha256Hex } from '@histofed/fl-core';
import { ChunkEvents, DEFAULT_CHUNK_BYTES, blobRefSchema, chunkCount } from './chunk-schemas';
import {
  BlobServer,
  TransferError,
  UploadReassembler,
  chunkBytesForLimit,
  downloadInChunks,
  uploadInChunks,
} from './chunked-transfer';

/** Deterministic pseudo-random bytes (xorshift32). */
function bytesOf(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** A Buffer holding `bytes` at an odd byteOffset, as socket.io may deliver it. */
function atOddOffset(bytes: Uint8Array): Buffer {
  const backing = Buffer.alloc(bytes.length + 3);
  const view = backing.subarray(1, 1 + bytes.length);
  view.set(bytes);
  return view;
}

/** Hand-built chunks of `bytes` as an uploader would send them. */
function chunksOf(bytes: Uint8Array, chunkBytes: number, uploadId = randomUUID()) {
  const count = chunkCount(bytes.length, chunkBytes);
  const sha256 = sha256Hex(bytes);
  return Array.from({ length: count }, (_, index) => ({
    uploadId,
    index,
    count,
    totalBytes: bytes.length,
    sha256,
    data: bytes.slice(index * chunkBytes, Math.min(bytes.length, (index + 1) * chunkBytes)),
  }));
}

const limits = { maxTotalBytes: 1000, maxChunkBytes: 100, maxOpenUploads: 2 };

function expectRefused(ack: unknown, pattern: RegExp): void {
  expect(ack).toEqual({ ok: false, error: expect.stringMatching(pattern) });
}

describe('UploadReassembler', () => {
  it('reassembles chunks (Buffers at odd offsets, ArrayBuffers) into byte-identical data', () => {
    const bytes = bytesOf(950, 3);
    const r = new UploadReassembler(limits);
    const chunks = chunksOf(bytes, 100);
    chunks.forEach((c, i) => {
      const data = i % 2 === 0 ? atOddOffset(c.data) : c.data.slice().buffer;
      expect(r.accept({ ...c, data })).toEqual({ ok: true });
    });
    expect(r.bufferedBytes).toBe(950);
    const taken = r.take(chunks[0].uploadId, sha256Hex(bytes));
    expect(taken.ok).toBe(true);
    if (taken.ok) expect(Buffer.from(taken.value).equals(Buffer.from(bytes))).toBe(true);
    expect(r.openUploads).toBe(0);
    expect(r.bufferedBytes).toBe(0);
    // Taken means forgotten.
    expect(r.take(chunks[0].uploadId)).toEqual({ ok: false, reason: expect.stringMatching(/unknown/) });
  });

  it('accepts an empty upload as one empty chunk', () => {
    const r = new UploadReassembler(limits);
    const [c] = chunksOf(new Uint8Array(0), 100);
    expect(c.count).toBe(1);
    expect(r.accept(c)).toEqual({ ok: true });
    const taken = r.take(c.uploadId);
    expect(taken.ok && taken.value.length).toBe(0);
  });

  it('names the malformed field and discards the upload the chunk claims', () => {
    const r = new UploadReassembler(limits);
    const chunks = chunksOf(bytesOf(300), 100);
    r.accept(chunks[0]);
    expect(r.openUploads).toBe(1);
    const ack = r.accept({ ...chunks[1], data: 'not binary', sha256: 'XYZ' });
    expectRefused(ack, /^site:upload-chunk: .*sha256: must be a sha256.*data: must be binary/);
    expect(r.openUploads).toBe(0);
    expectRefused(r.accept(null), /^site:upload-chunk: /);
    expectRefused(r.accept({ ...chunks[0], uploadId: 'abc' }), /uploadId/);
    expectRefused(r.accept({ ...chunks[0], index: -1 }), /index/);
  });

  // Each case: chunks to send first (all accepted), then the refused one and the reason.
  const cases: [string, (c: ReturnType<typeof chunksOf>) => { before: unknown[]; bad: unknown }, RegExp][] = [
    ['unknown upload not starting at index 0', (c) => ({ before: [], bad: c[1] }), /unknown upload .*expected index 0/],
    ['a chunk skipped', (c) => ({ before: [c[0]], bad: c[2] }), /out of order: expected chunk 1, got 2/],
    ['a chunk repeated', (c) => ({ before: [c[0], c[1]], bad: c[1] }), /out of order: expected chunk 2, got 1/],
    ['count changing', (c) => ({ before: [c[0]], bad: { ...c[1], count: 4 } }), /count changed from 3 to 4/],
    ['totalBytes changing', (c) => ({ before: [c[0]], bad: { ...c[1], totalBytes: 299 } }), /totalBytes changed from 300 to 299/],
    ['sha256 changing', (c) => ({ before: [c[0]], bad: { ...c[1], sha256: 'a'.repeat(64) } }), /sha256 changed from [0-9a-f]{64} to a{64}/],
    ['a chunk over maxChunkBytes', (c) => ({ before: [c[0]], bad: { ...c[1], data: new Uint8Array(101) } }), /chunk of 101 bytes exceeds the limit of 100 bytes/],
    [
      'the last chunk short of totalBytes',
      (c) => ({ before: [c[0], c[1]], bad: { ...c[2], data: c[2].data.subarray(0, 99) } }),
      /chunks carry 299 bytes in all, totalBytes says 300/,
    ],
    [
      'a middle chunk leaving no bytes for the rest',
      (c) => ({ before: [{ ...c[0], count: 4 }, { ...c[1], count: 4 }], bad: { ...c[2], count: 4 } }),
      /chunks carry 300 bytes so far, which leaves fewer than one byte for each of the 1 remaining chunks/,
    ],
    ['an empty middle chunk', (c) => ({ before: [c[0]], bad: { ...c[1], data: new Uint8Array(0) } }), /empty chunk/],
    ['a chunk after completion', (c) => ({ before: [c[0], c[1], c[2]], bad: { ...c[2], index: 3 } }), /upload is already complete/],
  ];

  it.each(cases)('refuses %s with a reason and keeps nothing', (_name, build, reason) => {
    const r = new UploadReassembler(limits);
    const chunks = chunksOf(bytesOf(300), 100);
    const { before, bad } = build(chunks);
    for (const c of before) expect(r.accept(c)).toEqual({ ok: true });
    const ack = r.accept(bad);
    expectRefused(ack, reason);
    if (!ack.ok) expect(ack.error).toMatch(new RegExp(`^site:upload-chunk: upload ${chunks[0].uploadId} chunk \\d+/\\d+: `));
    expect(r.openUploads).toBe(0);
    expect(r.bufferedBytes).toBe(0);
    // The upload is gone: its next chunk is refused as unknown.
    expectRefused(r.accept(chunks[1]), /unknown upload .*expected index 0/);
  });

  it('refuses at chunk 0, before allocating, an upload over maxTotalBytes or with an impossible count', () => {
    const r = new UploadReassembler(limits);
    const big = chunksOf(bytesOf(1001), 100);
    expectRefused(r.accept(big[0]), /totalBytes 1001 exceeds the limit of 1000 bytes/);
    expect(r.bufferedBytes).toBe(0);
    const [c] = chunksOf(bytesOf(300), 100);
    expectRefused(r.accept({ ...c, count: 2 }), /count 2 cannot carry 300 bytes in chunks of at most 100 bytes \(needs at least 3\)/);
    expectRefused(r.accept({ ...c, count: 301 }), /count 301 is more than totalBytes 300/);
    expectRefused(r.accept({ ...c, totalBytes: 0, count: 2, data: new Uint8Array(0) }), /count must be 1 for an empty upload/);
    expect(r.openUploads).toBe(0);
  });

  it('asks a limit function at every new upload: 0 refuses any, an upload already started keeps going', () => {
    let limit = 0;
    const r = new UploadReassembler({ ...limits, maxTotalBytes: () => limit });
    const chunks = chunksOf(bytesOf(300), 100);
    expectRefused(r.accept(chunks[0]), /no upload is expected on this connection now/);
    expect(r.bufferedBytes).toBe(0);
    limit = 299;
    expectRefused(r.accept(chunks[0]), /totalBytes 300 exceeds the limit of 299 bytes/);
    limit = 300;
    expect(r.accept(chunks[0])).toEqual({ ok: true });
    limit = 0; // the round closed: the upload in progress finishes (its update is then refused or accepted on its own)
    expect(r.accept(chunks[1])).toEqual({ ok: true });
    expect(r.accept(chunks[2])).toEqual({ ok: true });
  });

  it('refuses an upload beyond maxOpenUploads, and counts completed uploads until taken', () => {
    const r = new UploadReassembler(limits);
    const a = chunksOf(bytesOf(150, 1), 100);
    const b = chunksOf(bytesOf(150, 2), 100);
    const c = chunksOf(bytesOf(150, 3), 100);
    a.forEach((x) => expect(r.accept(x)).toEqual({ ok: true })); // complete, not taken
    expect(r.accept(b[0])).toEqual({ ok: true }); // in progress
    expectRefused(r.accept(c[0]), /too many open uploads on this connection \(limit 2\)/);
    expect(r.bufferedBytes).toBe(300);
    expect(r.take(a[0].uploadId).ok).toBe(true);
    expect(r.accept(c[0])).toEqual({ ok: true });
  });

  it('detects a tampered chunk on completion (sha256 mismatch) and discards the upload', () => {
    const bytes = bytesOf(300);
    const r = new UploadReassembler(limits);
    const chunks = chunksOf(bytes, 100);
    const tampered = chunks[1].data.slice();
    tampered[17] ^= 0x01;
    expect(r.accept(chunks[0])).toEqual({ ok: true });
    expect(r.accept({ ...chunks[1], data: tampered })).toEqual({ ok: true });
    const ack = r.accept(chunks[2]);
    expectRefused(ack, new RegExp(`sha256 mismatch: the 300 bytes received hash to [0-9a-f]{64}, the sender announced ${sha256Hex(bytes)}`));
    expect(r.openUploads).toBe(0);
    expect(r.take(chunks[0].uploadId).ok).toBe(false);
  });

  it('take refuses unknown and incomplete uploads, and a hash other than expected', () => {
    const r = new UploadReassembler(limits);
    const chunks = chunksOf(bytesOf(300), 100);
    const id = chunks[0].uploadId;
    expect(r.take(id)).toEqual({ ok: false, reason: expect.stringMatching(new RegExp(`upload ${id}: unknown`)) });
    r.accept(chunks[0]);
    expect(r.take(id)).toEqual({ ok: false, reason: `upload ${id}: incomplete: 1 of 3 chunks received (100 of 300 bytes)` });
    r.accept(chunks[1]);
    r.accept(chunks[2]);
    expect(r.take(id, 'b'.repeat(64))).toEqual({ ok: false, reason: expect.stringMatching(/holds sha256 [0-9a-f]{64}, expected b{64}/) });
    expect(r.openUploads).toBe(0);
  });

  it('drops idle uploads, and abort/clear free memory', () => {
    let now = 0;
    const r = new UploadReassembler({ ...limits, idleTimeoutMs: 1000, now: () => now });
    const a = chunksOf(bytesOf(300, 1), 100);
    const b = chunksOf(bytesOf(300, 2), 100);
    r.accept(a[0]);
    now = 900;
    r.accept(b[0]);
    now = 1500; // a idle for 1500 ms, b for 600 ms
    expectRefused(r.accept(a[1]), /unknown upload/);
    expect(r.accept(b[1])).toEqual({ ok: true });
    expect(r.abort(b[0].uploadId)).toBe(true);
    expect(r.openUploads).toBe(0);
    expect(r.accept(a[0])).toEqual({ ok: true }); // expired, so it may start again
    expect(r.bufferedBytes).toBe(300);
    r.clear();
    expect(r.bufferedBytes).toBe(0);
  });

  it('rejects nonsensical limits', () => {
    expect(() => new UploadReassembler({ maxTotalBytes: 0 })).toThrow(/maxTotalBytes must be a positive integer/);
  });
});

describe('uploadInChunks', () => {
  /** A channel that delivers each chunk to a real reassembler and returns its ack. */
  const channel = (r: UploadReassembler, events: string[] = []) => async (event: string, chunk: unknown) => {
    events.push(event);
    return r.accept(chunk);
  };

  it('sends ordered chunks of at most chunkBytes and the receiver ends with identical bytes', async () => {
    const bytes = bytesOf(1000, 9);
    const r = new UploadReassembler(limits);
    const events: string[] = [];
    const progress: number[] = [];
    const result = await uploadInChunks(channel(r, events), bytes, { chunkBytes: 64, onProgress: (sent) => progress.push(sent) });
    expect(result).toEqual({ uploadId: expect.any(String), sha256: sha256Hex(bytes), totalBytes: 1000, count: 16 });
    expect(new Set(events)).toEqual(new Set([ChunkEvents.uploadChunk]));
    expect(events).toHaveLength(16);
    expect(progress[0]).toBe(64);
    expect(progress.at(-1)).toBe(1000);
    const taken = r.take(result.uploadId, result.sha256);
    expect(taken.ok && Buffer.from(taken.value).equals(Buffer.from(bytes))).toBe(true);
  });

  it("throws the receiver's reason when a chunk is refused", async () => {
    const r = new UploadReassembler(limits);
    await expect(uploadInChunks(channel(r), bytesOf(1001))).rejects.toThrow(TransferError);
    await expect(uploadInChunks(channel(r), bytesOf(1001))).rejects.toThrow(
      /chunk 0\/1: refused by the receiver: .*totalBytes 1001 exceeds the limit of 1000 bytes/,
    );
    await expect(uploadInChunks(channel(r), bytesOf(300), { chunkBytes: 150 })).rejects.toThrow(
      /chunk of 150 bytes exceeds the limit of 100 bytes/,
    );
  });

  it('reports a tampered chunk as a sha256 mismatch from the receiver', async () => {
    const r = new UploadReassembler(limits);
    const tamper = async (_event: string, chunk: { index: number; data: Uint8Array }) => {
      if (chunk.index !== 1) return r.accept(chunk);
      const data = chunk.data.slice();
      data[0] ^= 0x80;
      return r.accept({ ...chunk, data });
    };
    await expect(uploadInChunks(tamper, bytesOf(300), { chunkBytes: 100 })).rejects.toThrow(/sha256 mismatch/);
    expect(r.bufferedBytes).toBe(0);
  });

  it('rejects a malformed ack and a missing ack with context', async () => {
    await expect(uploadInChunks(async () => ({ ok: 'yes' }), bytesOf(10))).rejects.toThrow(ValidationError);
    await expect(uploadInChunks(async () => ({ ok: 'yes' }), bytesOf(10))).rejects.toThrow(/chunk 0\/1 ack: ok/);
    await expect(
      uploadInChunks(async () => {
        throw new Error('operation has timed out');
      }, bytesOf(10)),
    ).rejects.toThrow(/upload [0-9a-f-]{36} chunk 0\/1: no acknowledgement \(operation has timed out\)/);
    await expect(uploadInChunks(async () => ({ ok: true }), bytesOf(10), { chunkBytes: 0 })).rejects.toThrow(/chunkBytes/);
  });
});

describe('BlobServer', () => {
  it('serves chunks of an offered blob and refuses unknown blobs and indexes with a reason', () => {
    const s = new BlobServer();
    const bytes = bytesOf(250);
    const ref = s.offer(bytes, 100);
    expect(ref).toEqual({ sha256: sha256Hex(bytes), totalBytes: 250, chunkBytes: 100, count: 3 });
    expect(blobRefSchema.parse(ref)).toEqual(ref);
    const last = s.serve({ sha256: ref.sha256, index: 2 });
    expect(last.ok && Array.from(last.data)).toEqual(Array.from(bytes.subarray(200)));
    expect(s.serve({ sha256: ref.sha256, index: 3 })).toEqual({
      ok: false,
      error: `site:fetch-chunk: blob ${ref.sha256}: index 3 out of range, the blob has 3 chunks`,
    });
    expect(s.serve({ sha256: 'c'.repeat(64), index: 0 })).toEqual({
      ok: false,
      error: expect.stringMatching(/blob c{64} is not offered/),
    });
    expect(s.serve({ sha256: ref.sha256, index: 0.5 })).toEqual({ ok: false, error: expect.stringMatching(/^site:fetch-chunk: index: /) });
    expect(s.retire(ref.sha256)).toBe(true);
    expect(s.serve({ sha256: ref.sha256, index: 0 }).ok).toBe(false);
  });

  it('keeps the last maxBlobs offered; re-offering refreshes and returns the same reference', () => {
    const s = new BlobServer(2);
    const a = s.offer(bytesOf(10, 1));
    const b = s.offer(bytesOf(10, 2));
    expect(s.offer(bytesOf(10, 1), 3)).toEqual(a); // same chunk size as first offered, a is now recent
    const c = s.offer(bytesOf(10, 3));
    expect(s.size).toBe(2);
    expect(s.has(a.sha256)).toBe(true);
    expect(s.has(b.sha256)).toBe(false);
    expect(s.has(c.sha256)).toBe(true);
    expect(a.chunkBytes).toBe(DEFAULT_CHUNK_BYTES);
  });
});

describe('downloadInChunks', () => {
  const serving = (s: BlobServer, requests: unknown[] = []) => async (req: unknown) => {
    requests.push(req);
    return s.serve(req);
  };

  it.each([0, 1, 99, 100, 101, 1234])('fetches %i bytes byte-identical', async (n) => {
    const s = new BlobServer();
    const bytes = bytesOf(n, n + 1);
    const ref = s.offer(bytes, 100);
    const requests: unknown[] = [];
    const out = await downloadInChunks(serving(s, requests), ref);
    expect(Buffer.from(out).equals(Buffer.from(bytes))).toBe(true);
    expect(requests).toEqual(Array.from({ length: ref.count }, (_, index) => ({ sha256: ref.sha256, index })));
  });

  it('copies chunks delivered as odd-offset Buffers or ArrayBuffers', async () => {
    const s = new BlobServer();
    const bytes = bytesOf(555);
    const ref = s.offer(bytes, 100);
    const out = await downloadInChunks(async (req) => {
      const ack = s.serve(req);
      if (!ack.ok) return ack;
      return { ok: true, data: req.index % 2 ? atOddOffset(ack.data) : ack.data.slice().buffer };
    }, ref);
    expect(sha256Hex(out)).toBe(ref.sha256);
  });

  it('reports a tampered chunk as a sha256 mismatch naming the blob', async () => {
    const s = new BlobServer();
    const bytes = bytesOf(300);
    const ref = s.offer(bytes, 100);
    const tampering = async (req: { sha256: string; index: number }) => {
      const ack = s.serve(req);
      if (ack.ok && req.index === 2) {
        const data = ack.data.slice();
        data[99] ^= 0x04;
        return { ok: true, data };
      }
      return ack;
    };
    await expect(downloadInChunks(tampering, ref)).rejects.toThrow(
      new RegExp(`^blob ${ref.sha256}: sha256 mismatch: the 300 bytes received hash to [0-9a-f]{64}, expected ${ref.sha256}$`),
    );
    await expect(downloadInChunks(tampering, ref, { what: 'global model round 3' })).rejects.toThrow(/^global model round 3: sha256 mismatch/);
  });

  it('refuses chunks of the wrong length, refusals, malformed acks and missing answers', async () => {
    const s = new BlobServer();
    const ref = s.offer(bytesOf(250), 100);
    await expect(downloadInChunks(async () => ({ ok: true, data: new Uint8Array(99) }), ref)).rejects.toThrow(
      /chunk 0\/3: got 99 bytes, expected 100/,
    );
    await expect(downloadInChunks(async (r) => (r.index === 2 ? { ok: true, data: new Uint8Array(100) } : s.serve(r)), ref)).rejects.toThrow(
      /chunk 2\/3: got 100 bytes, expected 50/,
    );
    s.retire(ref.sha256);
    await expect(downloadInChunks(serving(s), ref)).rejects.toThrow(TransferError);
    await expect(downloadInChunks(serving(s), ref)).rejects.toThrow(/chunk 0\/3: refused by the server: .*is not offered/);
    await expect(downloadInChunks(async () => ({ ok: true, data: 'AAAA' }), ref)).rejects.toThrow(/chunk 0\/3 ack: data: must be binary/);
    await expect(
      downloadInChunks(async () => {
        throw new Error('operation has timed out');
      }, ref),
    ).rejects.toThrow(/chunk 0\/3: no answer \(operation has timed out\)/);
  });

  it('refuses a malformed or oversized reference before fetching anything', async () => {
    const requests: unknown[] = [];
    const fetch = async (r: unknown) => {
      requests.push(r);
      return { ok: false, error: 'unreachable' };
    };
    const ref = { sha256: 'a'.repeat(64), totalBytes: 300, chunkBytes: 100, count: 3 };
    await expect(downloadInChunks(fetch, { ...ref, count: 2 })).rejects.toThrow(/count: must be 3 for 300 bytes in chunks of 100 bytes/);
    await expect(downloadInChunks(fetch, { ...ref, sha256: 'nope' })).rejects.toThrow(/sha256: must be a sha256/);
    await expect(downloadInChunks(fetch, ref, { maxTotalBytes: 299 })).rejects.toThrow(
      /blob a{64}: announces 300 bytes, more than the limit of 299 bytes/,
    );
    expect(requests).toHaveLength(0);
  });
});

describe('chunkBytesForLimit', () => {
  it('fits a chunk and its base64 form under the message limit, at most the preferred size', () => {
    expect(chunkBytesForLimit(8 * 1024 * 1024)).toBe(DEFAULT_CHUNK_BYTES);
    expect(chunkBytesForLimit(256 * 1024 * 1024)).toBe(DEFAULT_CHUNK_BYTES);
    const small = chunkBytesForLimit(1e6);
    expect(small).toBeLessThan(1e6);
    expect(Math.ceil(small / 3) * 4 + 64 * 1024).toBeLessThanOrEqual(1e6);
    expect(() => chunkBytesForLimit(1000)).toThrow(/leaves no room/);
  });
});
