import { lengthPrefixed } from '@histofed/fl-core';
import { SecAggError } from './errors';

/**
 * Byte encodings. Signed and encrypted payloads are a domain label followed by length-prefixed
 * fields (u32 little-endian lengths), so no two different field lists share an encoding.
 */

const ADVERTISE_DOMAIN = 'histofed-secagg-advertise-v1';
const SHARE_DOMAIN = 'histofed-secagg-share-v1';

type Field = string | number | Uint8Array;

export function encodeFields(fields: readonly Field[]): Uint8Array {
  const parts = fields.map((f) => {
    if (typeof f === 'string') return new TextEncoder().encode(f);
    if (typeof f === 'number') {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, f, true);
      return b;
    }
    return f;
  });
  return lengthPrefixed(parts);
}

/** Splits an `encode` output back into its raw fields; undefined when the framing is broken. */
function decode(bytes: Uint8Array): Uint8Array[] | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fields: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 4 > bytes.length) return undefined;
    const length = view.getUint32(at, true);
    if (at + 4 + length > bytes.length) return undefined;
    fields.push(bytes.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return fields;
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const u32 = (b: Uint8Array) => (b.length === 4 ? new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true) : -1);

/** What a site's stage-1 signature covers: its two per-round public keys, bound to run, round and site. */
export function advertiseSignedBytes(runId: string, round: number, siteId: string, cPublicKey: Uint8Array, sPublicKey: Uint8Array): Uint8Array {
  return encodeFields([ADVERTISE_DOMAIN, runId, round, siteId, cPublicKey, sPublicKey]);
}

/** The plaintext a site encrypts to one neighbour in stage 2: its shares of b and of its s secret key. */
export interface SharePayload {
  readonly from: string;
  readonly to: string;
  readonly runId: string;
  readonly round: number;
  readonly bShare: Uint8Array;
  readonly sShare: Uint8Array;
}

export function encodeSharePayload(p: SharePayload): Uint8Array {
  return encodeFields([SHARE_DOMAIN, p.from, p.to, p.runId, p.round, p.bShare, p.sShare]);
}

export function decodeSharePayload(bytes: Uint8Array): SharePayload | undefined {
  const f = decode(bytes);
  if (!f || f.length !== 7 || text(f[0]) !== SHARE_DOMAIN || u32(f[4]) < 0) return undefined;
  return { from: text(f[1]), to: text(f[2]), runId: text(f[3]), round: u32(f[4]), bShare: f[5].slice(), sShare: f[6].slice() };
}

/** A masked input on the wire: L little-endian uint32 words. */
export function encodeMaskedInput(masked: Uint32Array): Uint8Array {
  const out = new Uint8Array(masked.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < masked.length; i++) view.setUint32(i * 4, masked[i], true);
  return out;
}

export function decodeMaskedInput(bytes: Uint8Array, vectorLength: number, siteId: string): Uint32Array {
  if (bytes.length !== vectorLength * 4) {
    throw new SecAggError(`site ${siteId}: masked input must be ${vectorLength * 4} bytes (${vectorLength} uint32), got ${bytes.length}`);
  }
  const out = new Uint32Array(vectorLength);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < vectorLength; i++) out[i] = view.getUint32(i * 4, true);
  return out;
}
