import { createHash } from 'node:crypto';
import { randomBytes } from './box';
import { ed25519PublicKeyFromSeed, ed25519SignWithSeed, ed25519Verify } from './curve25519';
import { CryptoError } from './errors';

export const SIGN_PUBLIC_KEY_LENGTH = 32;
/** tweetnacl's secret key: the 32-byte seed, then the public key. */
export const SIGN_SECRET_KEY_LENGTH = 64;
export const SIGNATURE_LENGTH = 64;

/** An Ed25519 key pair (tweetnacl `sign` format): a site's long-term identity. */
export interface SigningKeyPair {
  readonly publicKey: Uint8Array;
  /** 64 bytes (seed + public key), as tweetnacl keeps it. */
  readonly secretKey: Uint8Array;
}

const fromSeed = (seed: Uint8Array): SigningKeyPair => {
  const publicKey = ed25519PublicKeyFromSeed(seed);
  const secretKey = new Uint8Array(SIGN_SECRET_KEY_LENGTH);
  secretKey.set(seed);
  secretKey.set(publicKey, 32);
  return { publicKey, secretKey };
};

/** A fresh key pair, as nacl.sign.keyPair makes it. */
export function generateSigningKeyPair(): SigningKeyPair {
  const seed = randomBytes(32);
  const keys = fromSeed(seed);
  seed.fill(0);
  return keys;
}

/**
 * The key pair of a 64-byte tweetnacl secret key. Unlike nacl.sign.keyPair.fromSecretKey, it
 * refuses a key whose second half is not the public key of its seed (a damaged key file).
 */
export function signingKeyPairFromSecret(secretKey: Uint8Array): SigningKeyPair {
  if (secretKey.length !== SIGN_SECRET_KEY_LENGTH) {
    throw new CryptoError(`signing secret key must be ${SIGN_SECRET_KEY_LENGTH} bytes, got ${secretKey.length}`);
  }
  const keys = fromSeed(secretKey.subarray(0, 32));
  if (!Buffer.from(keys.publicKey).equals(Buffer.from(secretKey.subarray(32)))) {
    throw new CryptoError('signing secret key: its second half is not the public key of its seed');
  }
  return keys;
}

/** Detached Ed25519 signature, byte for byte nacl.sign.detached's, with a 64-byte tweetnacl secret key. */
export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  if (secretKey.length !== SIGN_SECRET_KEY_LENGTH) {
    throw new CryptoError(`signing secret key must be ${SIGN_SECRET_KEY_LENGTH} bytes, got ${secretKey.length}`);
  }
  return ed25519SignWithSeed(message, secretKey.subarray(0, 32));
}

/**
 * True when `signature` is `publicKey`'s signature of `message`; false for any malformed input.
 * Accepts exactly what nacl.sign.detached.verify accepts, except (stricter) a signature whose S
 * is not reduced (S >= L, which tweetnacl accepts: S + L is a second signature of the same
 * message) and any signature under a public key of small order (which both accept for some
 * signatures valid for every message). See curve25519.spec.ts.
 */
export function verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_LENGTH || publicKey.length !== SIGN_PUBLIC_KEY_LENGTH) return false;
  return ed25519Verify(message, signature, publicKey);
}

/** Short, human-comparable fingerprint of a public key (shown at enrollment and in the admin API). */
export function fingerprint(publicKey: Uint8Array): string {
  const hex = createHash('sha512').update(publicKey).digest().subarray(0, 10).toString('hex');
  return hex.match(/.{4}/g)!.join(':');
}
