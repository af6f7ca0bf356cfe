import { hsalsa, xsalsa20poly1305 } from '@noble/ciphers/salsa';
import { randomFillSync } from 'node:crypto';
import { x25519, x25519PublicKey } from './curve25519';
import { CryptoError } from './errors';

export { CryptoError } from './errors';

/*
 * tweetnacl's `box` (crypto_box_curve25519xsalsa20poly1305) from audited implementations: X25519
 * from node:crypto (OpenSSL), HSalsa20 and XSalsa20-Poly1305 from @noble/ciphers. Same keys, same
 * wire format as tweetnacl (24-byte nonce; ciphertext = 16-byte Poly1305 tag, then the encrypted
 * message), checked against tweetnacl in box.spec.ts. Sites already in the field seal with
 * tweetnacl, and their boxes open here. Opening a 20 MB update takes ~110-130 ms (tweetnacl:
 * ~175-210 ms).
 */

export const BOX_PUBLIC_KEY_LENGTH = 32;
export const BOX_SECRET_KEY_LENGTH = 32;
export const BOX_SHARED_KEY_LENGTH = 32;
export const BOX_NONCE_LENGTH = 24;
/** The Poly1305 tag in front of every box. */
export const BOX_OVERHEAD_LENGTH = 16;

/** Cryptographically secure random bytes (node:crypto), as a plain Uint8Array. */
export function randomBytes(length: number): Uint8Array {
  return randomFillSync(new Uint8Array(length));
}

/** An X25519 key pair for tweetnacl `box`. */
export interface BoxKeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

/** A fresh key pair, as nacl.box.keyPair makes it (32 random bytes, unclamped, and their X25519 public key). */
export function generateBoxKeyPair(): BoxKeyPair {
  const secretKey = randomBytes(BOX_SECRET_KEY_LENGTH);
  return { publicKey: x25519PublicKey(secretKey), secretKey };
}

export function boxKeyPairFromSecret(secretKey: Uint8Array): BoxKeyPair {
  if (secretKey.length !== BOX_SECRET_KEY_LENGTH) {
    throw new CryptoError(`box secret key must be ${BOX_SECRET_KEY_LENGTH} bytes, got ${secretKey.length}`);
  }
  const copy = new Uint8Array(secretKey);
  return { publicKey: x25519PublicKey(copy), secretKey: copy };
}

/** "expand 32-byte k" as little-endian words. */
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

const words = (bytes: Uint8Array): Uint32Array => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getUint32(4 * i, true);
  return out;
};

/**
 * The key nacl.box.before derives (crypto_box_beforenm): HSalsa20 of the X25519 shared secret
 * with a zero input. Throws a CryptoError when the public key has low order: the shared secret
 * would then be all zero and the key known to everyone (tweetnacl does not refuse it).
 */
export function boxSharedKey(publicKey: Uint8Array, secretKey: Uint8Array): Uint8Array {
  if (publicKey.length !== BOX_PUBLIC_KEY_LENGTH) throw new CryptoError(`box public key must be ${BOX_PUBLIC_KEY_LENGTH} bytes, got ${publicKey.length}`);
  if (secretKey.length !== BOX_SECRET_KEY_LENGTH) throw new CryptoError(`box secret key must be ${BOX_SECRET_KEY_LENGTH} bytes, got ${secretKey.length}`);
  const shared = x25519(secretKey, publicKey);
  if (!shared) throw new CryptoError('box public key has low order (no secret can be agreed with it)');
  const keyWords = words(shared);
  shared.fill(0);
  const out = new Uint32Array(8);
  hsalsa(SIGMA, keyWords, new Uint32Array(4), out);
  keyWords.fill(0);
  const key = new Uint8Array(BOX_SHARED_KEY_LENGTH);
  const view = new DataView(key.buffer);
  for (let i = 0; i < 8; i++) view.setUint32(4 * i, out[i], true);
  out.fill(0);
  return key;
}

/** nacl.secretbox (= nacl.box.after with a shared key): 16-byte tag, then the encrypted message. */
export function secretboxSeal(plaintext: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array {
  if (nonce.length !== BOX_NONCE_LENGTH) throw new CryptoError(`nonce must be ${BOX_NONCE_LENGTH} bytes, got ${nonce.length}`);
  if (key.length !== BOX_SHARED_KEY_LENGTH) throw new CryptoError(`secretbox key must be ${BOX_SHARED_KEY_LENGTH} bytes, got ${key.length}`);
  return xsalsa20poly1305(key, nonce).encrypt(plaintext);
}

/**
 * nacl.secretbox.open (= nacl.box.open.after): the plaintext of a box (16-byte tag + ciphertext)
 * under a 32-byte key, or null if it does not authenticate or a length is wrong. The tag is
 * checked before anything is decrypted.
 */
export function secretboxOpen(box: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array | null {
  if (box.length < BOX_OVERHEAD_LENGTH || nonce.length !== BOX_NONCE_LENGTH || key.length !== BOX_SHARED_KEY_LENGTH) return null;
  try {
    return xsalsa20poly1305(key, nonce).decrypt(box);
  } catch {
    return null; // 'invalid tag': the only error left once the lengths are right
  }
}

export interface Sealed {
  readonly nonce: Uint8Array;
  readonly ciphertext: Uint8Array;
}

/**
 * Encrypts and authenticates `plaintext` from the sender to the recipient (X25519 + XSalsa20-Poly1305),
 * exactly as nacl.box does. Only the recipient can open it, and opening proves it came from the
 * holder of `senderSecretKey`.
 */
export function seal(plaintext: Uint8Array, recipientPublicKey: Uint8Array, senderSecretKey: Uint8Array): Sealed {
  const nonce = randomBytes(BOX_NONCE_LENGTH);
  const key = boxSharedKey(recipientPublicKey, senderSecretKey);
  const ciphertext = secretboxSeal(plaintext, nonce, key);
  key.fill(0);
  return { nonce, ciphertext };
}

/** Opens a sealed message (nacl.box.open); throws a CryptoError if it was tampered with or sealed by another key. */
export function open(sealed: Sealed, senderPublicKey: Uint8Array, recipientSecretKey: Uint8Array, what = 'message'): Uint8Array {
  if (sealed.nonce.length !== BOX_NONCE_LENGTH) {
    throw new CryptoError(`${what}: nonce must be ${BOX_NONCE_LENGTH} bytes, got ${sealed.nonce.length}`);
  }
  if (senderPublicKey.length !== BOX_PUBLIC_KEY_LENGTH) {
    throw new CryptoError(`${what}: sender public key must be ${BOX_PUBLIC_KEY_LENGTH} bytes`);
  }
  if (recipientSecretKey.length !== BOX_SECRET_KEY_LENGTH) {
    throw new CryptoError(`${what}: recipient secret key must be ${BOX_SECRET_KEY_LENGTH} bytes`);
  }
  const cannotOpen = () => new CryptoError(`${what}: cannot be opened (tampered, or not sealed by the registered site key)`);
  let key: Uint8Array;
  try {
    key = boxSharedKey(senderPublicKey, recipientSecretKey);
  } catch {
    throw cannotOpen(); // a low-order sender key: anyone could have sealed it
  }
  const plain = secretboxOpen(sealed.ciphertext, sealed.nonce, key);
  key.fill(0);
  if (!plain) throw cannotOpen();
  return plain;
}

export const toBase64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
export const fromBase64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));
