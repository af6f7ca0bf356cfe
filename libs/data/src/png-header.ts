import { open } from 'node:fs/promises';

/**
 * Cheap PNG sanity check without decoding: the 8-byte signature, an IHDR chunk first with a valid
 * CRC and non-zero size, and the IEND chunk at the very end of the file (which catches truncated
 * downloads and copies). Reads 33 bytes at the start and 12 at the end.
 */

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const IEND = Buffer.from([0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]);
const HEAD_BYTES = 8 + 4 + 4 + 13 + 4;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export type PngHeaderCheck = { ok: true; width: number; height: number } | { ok: false; reason: string };

/** Checks the header and trailer of a PNG file; never throws (unreadable files are a failed check). */
export async function checkPngHeader(file: string): Promise<PngHeaderCheck> {
  let handle;
  try {
    handle = await open(file, 'r');
    const { size } = await handle.stat();
    if (size < HEAD_BYTES + IEND.length) return { ok: false, reason: `file too small for a PNG (${size} bytes)` };
    const head = Buffer.alloc(HEAD_BYTES);
    await handle.read(head, 0, HEAD_BYTES, 0);
    if (!head.subarray(0, 8).equals(SIGNATURE)) return { ok: false, reason: 'not a PNG (bad signature)' };
    if (head.readUInt32BE(8) !== 13 || head.toString('latin1', 12, 16) !== 'IHDR') {
      return { ok: false, reason: 'PNG has no IHDR chunk first' };
    }
    if (crc32(head.subarray(12, 29)) !== head.readUInt32BE(29)) return { ok: false, reason: 'PNG IHDR chunk is corrupt (bad CRC)' };
    const width = head.readUInt32BE(16);
    const height = head.readUInt32BE(20);
    if (width === 0 || height === 0) return { ok: false, reason: `PNG has an empty size (${width}x${height})` };
    const tail = Buffer.alloc(IEND.length);
    await handle.read(tail, 0, IEND.length, size - IEND.length);
    if (!tail.equals(IEND)) return { ok: false, reason: 'PNG is truncated (no IEND chunk at the end)' };
    return { ok: true, width, height };
  } catch (err) {
    return { ok: false, reason: `cannot read file: ${(err as Error).message}` };
  } finally {
    await handle?.close();
  }
}
