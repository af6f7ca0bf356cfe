import nacl from 'tweetnacl';
import { CryptoError, generateBoxKeyPair, open, poly1305, seal, secretboxOpen } from './box';

const lowlevel = (nacl as unknown as { lowlevel: { crypto_onetimeauth(out: Uint8Array, outpos: number, m: Uint8Array, mpos: number, n: number, k: Uint8Array): number } }).lowlevel;

let seed = 99;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
/** Bytes of a pattern (0: zeros, 1: 0xff, else pseudo-random), optionally behind an odd offset in a Buffer. */
const bytes = (n: number, pattern: number, offset = 0): Uint8Array => {
  const b = Buffer.alloc(n + offset).subarray(offset);
  for (let i = 0; i < n; i++) b[i] = pattern === 0 ? 0 : pattern === 1 ? 255 : Math.floor(rand() * 256);
  return b;
};
const same = (a: Uint8Array | null, b: Uint8Array | null) => a !== null && b !== null && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

describe('open (tweetnacl box compatible, faster)', () => {
  const site = generateBoxKeyPair();
  const coordinator = generateBoxKeyPair();

  it('opens exactly what nacl.box seals, for every length around block and word boundaries and from unaligned Buffers', () => {
    // The box key exchange (X25519) is tweetnacl's own: done once here, secretbox per length.
    const shared = nacl.box.before(site.publicKey, coordinator.secretKey);
    for (let n = 0; n < 300; n++) {
      const plaintext = bytes(n, n % 3);
      const nonce = bytes(24, 2);
      const box = nacl.box.after(new Uint8Array(plaintext), new Uint8Array(nonce), shared);
      const wire = Buffer.concat([Buffer.alloc(n % 4), Buffer.from(box)]).subarray(n % 4);
      const opened = secretboxOpen(wire, nonce, shared);
      expect(same(opened, plaintext)).toBe(true);
      expect(same(opened, nacl.box.open.after(box, new Uint8Array(nonce), shared))).toBe(true);
    }
    for (const n of [0, 1, 31, 32, 33, 64, 1000]) {
      const plaintext = bytes(n, 2);
      const sealed = seal(plaintext, coordinator.publicKey, site.secretKey);
      const wire = Buffer.concat([Buffer.alloc(3), Buffer.from(sealed.ciphertext)]).subarray(3);
      const opened = open({ nonce: Buffer.from(sealed.nonce), ciphertext: wire }, Buffer.from(site.publicKey), coordinator.secretKey);
      expect(same(opened, plaintext)).toBe(true);
    }
  });

  it('opens a multi-megabyte update byte for byte into an aligned array it owns, padding cleared', () => {
    const plaintext = bytes(1024 * 1024 + 7, 2);
    const sealed = seal(plaintext, coordinator.publicKey, site.secretKey);
    const opened = open(sealed, site.publicKey, coordinator.secretKey);
    expect(same(opened, plaintext)).toBe(true);
    expect(opened.byteOffset).toBe(0);
    expect(Array.from(new Uint8Array(opened.buffer, opened.length))).toEqual([0]);
  });

  it('refuses any tampered byte, a truncated box, another sender and another nonce, like tweetnacl', () => {
    const plaintext = bytes(100, 2);
    const sealed = seal(plaintext, coordinator.publicKey, site.secretKey);
    for (const i of [0, 5, 15, 16, 17, 50, sealed.ciphertext.length - 1]) {
      const bad = new Uint8Array(sealed.ciphertext);
      bad[i] ^= 1 << (i % 8);
      expect(() => open({ nonce: sealed.nonce, ciphertext: bad }, site.publicKey, coordinator.secretKey, 'update from x')).toThrow(
        new CryptoError('update from x: cannot be opened (tampered, or not sealed by the registered site key)'),
      );
    }
    expect(() => open({ nonce: sealed.nonce, ciphertext: sealed.ciphertext.subarray(0, 15) }, site.publicKey, coordinator.secretKey)).toThrow(CryptoError);
    expect(() => open(sealed, generateBoxKeyPair().publicKey, coordinator.secretKey)).toThrow(CryptoError);
    const otherNonce = new Uint8Array(sealed.nonce);
    otherNonce[23] ^= 1;
    expect(() => open({ nonce: otherNonce, ciphertext: sealed.ciphertext }, site.publicKey, coordinator.secretKey)).toThrow(CryptoError);
    // An empty message still authenticates (16-byte tag only).
    const empty = seal(new Uint8Array(0), coordinator.publicKey, site.secretKey);
    expect(open(empty, site.publicKey, coordinator.secretKey).length).toBe(0);
  });

  it('secretboxOpen agrees with nacl.secretbox.open on random keys, nonces and boxes, authentic or not', () => {
    for (let t = 0; t < 400; t++) {
      const key = bytes(32, t % 7 === 0 ? 1 : 2);
      const nonce = bytes(24, 2);
      const message = bytes(Math.floor(rand() * 200), t % 5);
      const box = nacl.secretbox(new Uint8Array(message), new Uint8Array(nonce), new Uint8Array(key));
      if (t % 2) box[Math.floor(rand() * box.length)] ^= 1 + Math.floor(rand() * 255);
      const expected = nacl.secretbox.open(box, new Uint8Array(nonce), new Uint8Array(key));
      const actual = secretboxOpen(Buffer.from(box), nonce, key);
      expect(expected === null ? actual === null : same(actual, expected)).toBe(true);
    }
  });

  it('poly1305 gives tweetnacl crypto_onetimeauth tags, also for extreme keys and messages', () => {
    for (let t = 0; t < 1500; t++) {
      const n = t < 300 ? t : Math.floor(rand() * 1000);
      const key = bytes(32, t % 11 === 0 ? 1 : t % 13 === 0 ? 0 : 2);
      const message = bytes(n, t % 4, t % 3);
      const expected = new Uint8Array(16);
      lowlevel.crypto_onetimeauth(expected, 0, new Uint8Array(message), 0, n, new Uint8Array(key));
      const actual = new Uint8Array(16);
      poly1305(message, key, actual);
      expect(Array.from(actual)).toEqual(Array.from(expected));
    }
  });
});
