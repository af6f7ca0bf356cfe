import { createCipheriv, createHash } from 'node:crypto';
import nacl from 'tweetnacl';
import { applyMask } from './prg';

/** Jest's element-wise toEqual is slow on long typed arrays; compare the bytes instead. */
const same = (a: Uint32Array, b: Uint32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

const expand = (seed: Uint8Array, length: number) => {
  const out = new Uint32Array(length);
  applyMask(out, seed, 1);
  return out;
};

describe('PRG mask expansion', () => {
  const seed = nacl.randomBytes(32);

  it('is AES-256-CTR(key = sha256(domain || seed), IV 0) read as little-endian uint32', () => {
    const key = createHash('sha256').update('histofed-secagg-prg-v1').update(seed).digest();
    const stream = createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(40));
    const expected = Array.from({ length: 10 }, (_, i) => stream.readUInt32LE(i * 4));
    expect(Array.from(expand(seed, 10))).toEqual(expected);
  });

  it('is deterministic per seed, and different seeds give unrelated masks', () => {
    const a = expand(seed, 50_000);
    expect(same(expand(seed, 50_000), a)).toBe(true);
    const b = expand(nacl.randomBytes(32), 50_000);
    expect(a.filter((x, i) => x === b[i]).length).toBeLessThan(3);
    // Roughly uniform words: mean near 2^31.
    const mean = a.reduce((s, x) => s + x, 0) / a.length;
    expect(Math.abs(mean / 2 ** 31 - 1)).toBeLessThan(0.03);
  });

  it('gives the same stream whatever the length, across the 1 MiB block boundary', () => {
    const blockWords = 1 << 18;
    const long = expand(seed, 2 * blockWords + 3);
    for (const length of [1, 3, 5, blockWords - 1, blockWords, blockWords + 1, blockWords + 3, 2 * blockWords + 1]) {
      expect(same(expand(seed, length), long.subarray(0, length))).toBe(true);
    }
    expect(expand(seed, 0)).toEqual(new Uint32Array(0));
  });

  it('adding then subtracting the same mask gives back the input exactly (mod 2^32)', () => {
    const input = new Uint32Array(300_001).map((_, i) => (i * 2654435761) >>> 0);
    const target = input.slice();
    applyMask(target, seed, 1);
    expect(target.filter((x, i) => x === input[i]).length).toBeLessThan(5);
    const other = nacl.randomBytes(32);
    applyMask(target, other, -1);
    applyMask(target, seed, -1);
    applyMask(target, other, 1);
    expect(same(target, input)).toBe(true);
  });

  it('refuses a seed that is not 32 bytes', () => {
    expect(() => applyMask(new Uint32Array(4), new Uint8Array(31), 1)).toThrow(/mask seed must be 32 bytes, got 31/);
  });
});
