import nacl from 'tweetnacl';
import { x25519 as nobleX25519 } from '@noble/curves/ed25519';
import {
  BOX_OVERHEAD_LENGTH,
  CryptoError,
  boxKeyPairFromSecret,
  boxSharedKey,
  generateBoxKeyPair,
  open,
  randomBytes,
  seal,
  secretboxOpen,
  secretboxSeal,
} from './box';

/*
 * libs/crypto's box (X25519 from node:crypto, HSalsa20 and XSalsa20-Poly1305 from @noble/ciphers)
 * against tweetnacl's, which the sites in the field use: same keys, same bytes, same refusals.
 */

let seed = 99;
const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
const randInt = (n: number) => Math.floor(rand() * n);
/** Bytes of a pattern (0: zeros, 1: 0xff, else pseudo-random), optionally behind an odd offset in a Buffer. */
const bytes = (n: number, pattern: number, offset = 0): Uint8Array => {
  const b = Buffer.alloc(n + offset).subarray(offset);
  for (let i = 0; i < n; i++) b[i] = pattern === 0 ? 0 : pattern === 1 ? 255 : randInt(256);
  return b;
};
/** tweetnacl takes only arrays whose constructor is exactly Uint8Array (no Buffers). */
const plain = (b: Uint8Array) => new Uint8Array(b);
const hex = (b: Uint8Array | null) => (b === null ? null : Buffer.from(b).toString('hex'));
const unaligned = (b: Uint8Array, offset: number) => Buffer.concat([Buffer.alloc(offset), Buffer.from(b)]).subarray(offset);

describe('box keys and key agreement (tweetnacl compatible)', () => {
  it('key pairs are tweetnacl key pairs, and tweetnacl key pairs load', () => {
    for (let t = 0; t < 20; t++) {
      const ours = generateBoxKeyPair();
      expect(ours.secretKey.constructor).toBe(Uint8Array);
      expect(hex(ours.publicKey)).toBe(hex(nacl.box.keyPair.fromSecretKey(ours.secretKey).publicKey));
      const theirs = nacl.box.keyPair();
      expect(hex(boxKeyPairFromSecret(theirs.secretKey).publicKey)).toBe(hex(theirs.publicKey));
    }
    expect(() => boxKeyPairFromSecret(new Uint8Array(31))).toThrow(new CryptoError('box secret key must be 32 bytes, got 31'));
  });

  it('boxSharedKey is nacl.box.before, also for public keys with the top bit set or u >= p (RFC 7748 reduces them)', () => {
    const p = Buffer.from('edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', 'hex');
    for (let t = 0; t < 30; t++) {
      const secret = t % 2 ? nacl.box.keyPair().secretKey : bytes(32, 2);
      let peer: Uint8Array = t % 3 === 0 ? bytes(32, 2) : nacl.box.keyPair().publicKey;
      if (t % 5 === 1) peer = Uint8Array.from(peer, (b, i) => (i === 31 ? b | 0x80 : b));
      if (t % 7 === 2) peer = Uint8Array.from(p, (b, i) => (i === 0 ? b + (t % 18) + 1 : b)); // p + 1 .. p + 18
      expect(hex(boxSharedKey(peer, secret))).toBe(hex(nacl.box.before(plain(peer), plain(secret))));
      // The X25519 step agrees with @noble/curves too.
      expect(hex(nacl.scalarMult(plain(secret), plain(peer)))).toBe(hex(nobleX25519.getSharedSecret(secret, peer)));
    }
  });

  it('refuses a low-order public key, where tweetnacl derives a key anyone can compute (stricter)', () => {
    const secret = nacl.box.keyPair().secretKey;
    for (const lowOrder of [new Uint8Array(32), Uint8Array.of(1, ...new Uint8Array(31))]) {
      expect(() => boxSharedKey(lowOrder, secret)).toThrow(/low order/);
      // tweetnacl: the all-zero shared secret gives the same key for every secret key.
      expect(hex(nacl.box.before(lowOrder, secret))).toBe(hex(nacl.box.before(lowOrder, nacl.box.keyPair().secretKey)));
    }
  });
});

describe('seal / open (tweetnacl box wire format)', () => {
  const site = generateBoxKeyPair();
  const coordinator = generateBoxKeyPair();
  const shared = nacl.box.before(site.publicKey, coordinator.secretKey);

  it('opens exactly what nacl.box seals and seals exactly what nacl.box seals, for every length 0-300, from unaligned Buffers', () => {
    for (let n = 0; n <= 300; n++) {
      const plaintext = bytes(n, n % 3);
      const nonce = bytes(24, 2);
      const box = nacl.box.after(plain(plaintext), plain(nonce), shared);
      expect(box.length).toBe(n + BOX_OVERHEAD_LENGTH);
      const opened = secretboxOpen(unaligned(box, n % 4), unaligned(nonce, n % 3), shared);
      expect(hex(opened)).toBe(hex(plaintext));
      // Same nonce and key: the same bytes (16-byte tag, then the encrypted message).
      expect(hex(secretboxSeal(unaligned(plaintext, n % 5), nonce, shared))).toBe(hex(box));
    }
  });

  it('interoperates with nacl.box / nacl.box.open at random lengths 0-300 under fresh keys', () => {
    for (let t = 0; t < 40; t++) {
      const a = t % 2 ? generateBoxKeyPair() : nacl.box.keyPair();
      const b = t % 3 ? generateBoxKeyPair() : nacl.box.keyPair();
      const plaintext = bytes(randInt(301), 2);
      const nonce = nacl.randomBytes(24);
      const theirs = nacl.box(plain(plaintext), nonce, b.publicKey, a.secretKey);
      expect(hex(open({ nonce, ciphertext: theirs }, a.publicKey, b.secretKey))).toBe(hex(plaintext));
      const ours = seal(plaintext, b.publicKey, a.secretKey);
      expect(hex(nacl.box.open(plain(ours.ciphertext), plain(ours.nonce), plain(a.publicKey), plain(b.secretKey)))).toBe(hex(plaintext));
      expect(hex(nacl.box(plain(plaintext), plain(ours.nonce), plain(b.publicKey), plain(a.secretKey)))).toBe(hex(ours.ciphertext));
    }
  });

  it('a 1 MB update: byte for byte with tweetnacl both ways', () => {
    const plaintext = bytes(1024 * 1024 + 7, 2);
    const nonce = nacl.randomBytes(24);
    const theirs = nacl.box(plain(plaintext), nonce, coordinator.publicKey, site.secretKey);
    expect(hex(secretboxSeal(plaintext, nonce, boxSharedKey(coordinator.publicKey, site.secretKey)))).toBe(hex(theirs));
    const opened = open({ nonce: Buffer.from(nonce), ciphertext: unaligned(theirs, 3) }, site.publicKey, coordinator.secretKey);
    expect(Buffer.from(opened).equals(Buffer.from(plaintext))).toBe(true);
    const ours = seal(plaintext, coordinator.publicKey, site.secretKey);
    const back = nacl.box.open(plain(ours.ciphertext), plain(ours.nonce), plain(site.publicKey), plain(coordinator.secretKey));
    expect(back !== null && Buffer.from(back).equals(Buffer.from(plaintext))).toBe(true);
  });

  it('refuses every tampered tag byte and bit, tampered ciphertext, a truncated box, another sender, recipient or nonce, like tweetnacl', () => {
    const plaintext = bytes(100, 2);
    const sealed = seal(plaintext, coordinator.publicKey, site.secretKey);
    const refused = new CryptoError('update from x: cannot be opened (tampered, or not sealed by the registered site key)');
    const tampered: Uint8Array[] = [];
    for (let i = 0; i < 16; i++) for (let bit = 0; bit < 8; bit++) tampered.push(sealed.ciphertext.map((b, j) => (j === i ? b ^ (1 << bit) : b)));
    for (const i of [16, 17, 50, sealed.ciphertext.length - 1]) tampered.push(sealed.ciphertext.map((b, j) => (j === i ? b ^ 0x80 : b)));
    tampered.push(sealed.ciphertext.subarray(0, 15), sealed.ciphertext.subarray(0, 16), sealed.ciphertext.subarray(0, sealed.ciphertext.length - 1));
    tampered.push(Buffer.concat([sealed.ciphertext, Buffer.alloc(1)]));
    for (const bad of tampered) {
      expect(() => open({ nonce: sealed.nonce, ciphertext: bad }, site.publicKey, coordinator.secretKey, 'update from x')).toThrow(refused);
      expect(nacl.box.open.after(plain(bad), plain(sealed.nonce), shared)).toBeNull();
    }
    const other = generateBoxKeyPair();
    expect(() => open(sealed, other.publicKey, coordinator.secretKey)).toThrow(CryptoError);
    expect(() => open(sealed, site.publicKey, other.secretKey)).toThrow(CryptoError);
    expect(nacl.box.open(plain(sealed.ciphertext), plain(sealed.nonce), plain(site.publicKey), plain(other.secretKey))).toBeNull();
    const otherNonce = sealed.nonce.map((b, i) => (i === 23 ? b ^ 1 : b));
    expect(() => open({ nonce: otherNonce, ciphertext: sealed.ciphertext }, site.publicKey, coordinator.secretKey)).toThrow(CryptoError);
    // Malformed lengths are refused with their reason.
    expect(() => open({ nonce: sealed.nonce.subarray(1), ciphertext: sealed.ciphertext }, site.publicKey, coordinator.secretKey, 'u')).toThrow('u: nonce must be 24 bytes, got 23');
    expect(() => open(sealed, site.publicKey.subarray(1), coordinator.secretKey, 'u')).toThrow('u: sender public key must be 32 bytes');
    expect(() => open(sealed, site.publicKey, coordinator.secretKey.subarray(1), 'u')).toThrow('u: recipient secret key must be 32 bytes');
    // An empty message still authenticates (16-byte tag only).
    const empty = seal(new Uint8Array(0), coordinator.publicKey, site.secretKey);
    expect(empty.ciphertext.length).toBe(16);
    expect(open(empty, site.publicKey, coordinator.secretKey).length).toBe(0);
  });

  it('refuses a box "from" a low-order key, which tweetnacl opens (anyone can make one: stricter)', () => {
    const lowOrder = new Uint8Array(32);
    const nonce = nacl.randomBytes(24);
    // Made without any secret: the key is HSalsa20 of zero.
    const forged = nacl.box.after(new Uint8Array([1, 2, 3]), nonce, nacl.box.before(lowOrder, nacl.box.keyPair().secretKey));
    expect(nacl.box.open(forged, nonce, lowOrder, coordinator.secretKey)).toEqual(new Uint8Array([1, 2, 3]));
    expect(() => open({ nonce, ciphertext: forged }, lowOrder, coordinator.secretKey)).toThrow(/cannot be opened/);
    // Nor does anything get sealed to such a key.
    expect(() => seal(new Uint8Array(3), lowOrder, site.secretKey)).toThrow(/low order/);
  });

  it('secretboxOpen agrees with nacl.secretbox.open on random keys, nonces and boxes, authentic or not', () => {
    for (let t = 0; t < 400; t++) {
      const key = bytes(32, t % 7 === 0 ? 1 : 2);
      const nonce = bytes(24, 2);
      const message = bytes(randInt(300), t % 5);
      const box = nacl.secretbox(plain(message), plain(nonce), plain(key));
      if (t % 2) box[randInt(box.length)] ^= 1 + randInt(255);
      const expected = nacl.secretbox.open(box, plain(nonce), plain(key));
      expect(hex(secretboxOpen(Buffer.from(box), nonce, key))).toBe(hex(expected));
    }
    expect(secretboxOpen(new Uint8Array(15), new Uint8Array(24), new Uint8Array(32))).toBeNull();
    expect(secretboxOpen(new Uint8Array(16), new Uint8Array(23), new Uint8Array(32))).toBeNull();
    expect(secretboxOpen(new Uint8Array(16), new Uint8Array(24), new Uint8Array(31))).toBeNull();
  });

  it('randomBytes gives plain Uint8Arrays of fresh bytes', () => {
    const a = randomBytes(32);
    expect(a.constructor).toBe(Uint8Array);
    expect(a.length).toBe(32);
    expect(hex(a)).not.toBe(hex(randomBytes(32)));
  });
});
