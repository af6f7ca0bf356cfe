import { createCipheriv, createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { SecAggError } from './errors';

/**
 * Mask expansion: a 32-byte seed becomes L uint32 words, the AES-256-CTR keystream (key =
 * sha256(domain || seed), IV 0) read as little-endian words. Sites and coordinator must expand
 * identically, so this definition is part of the protocol.
 */

export const SEED_LENGTH = 32;
const PRG_DOMAIN = 'histofed-secagg-prg-v1';
/** 1 MiB of keystream at a time keeps memory flat for any L. */
const BLOCK_WORDS = 1 << 18;
const ZERO_IV = Buffer.alloc(16);
const BIG_ENDIAN = endianness() === 'BE';

/** Adds (sign 1) or subtracts (sign -1) PRG(seed) into `target`, modulo 2^32, in place. */
export function applyMask(target: Uint32Array, seed: Uint8Array, sign: 1 | -1): void {
  if (seed.length !== SEED_LENGTH) throw new SecAggError(`mask seed must be ${SEED_LENGTH} bytes, got ${seed.length}`);
  const key = createHash('sha256').update(PRG_DOMAIN).update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, ZERO_IV);
  const zeros = Buffer.alloc(Math.min(BLOCK_WORDS, target.length) * 4);
  for (let start = 0; start < target.length; start += BLOCK_WORDS) {
    const words = Math.min(BLOCK_WORDS, target.length - start);
    const stream = cipher.update(zeros.subarray(0, words * 4));
    if (BIG_ENDIAN) stream.swap32();
    const bytes = stream.byteOffset % 4 === 0 ? stream : new Uint8Array(stream); // a Uint32Array view needs alignment
    const mask = new Uint32Array(bytes.buffer, bytes.byteOffset, words);
    if (sign === 1) {
      for (let i = 0; i < words; i++) target[start + i] = (target[start + i] + mask[i]) >>> 0;
    } else {
      for (let i = 0; i < words; i++) target[start + i] = (target[start + i] - mask[i]) >>> 0;
    }
  }
  key.fill(0);
}
