import nacl from 'tweetnacl';
import { CryptoError } from './box';

/** An Ed25519 key pair (tweetnacl `sign`): a site's long-term identity. */
export interface SigningKeyPair {
  readonly publicKey: Uint8Array;
  /** 64 bytes (seed + public key), as tweetnacl keeps it. */
  readonly secretKey: Uint8Array;
}

export function generateSigningKeyPair(): SigningKeyPair {
  return nacl.sign.keyPair();
}

export function signingKeyPairFromSecret(secretKey: Uint8Array): SigningKeyPair {
  if (secretKey.length !== nacl.sign.secretKeyLength) {
    throw new CryptoError(`signing secret key must be ${nacl.sign.secretKeyLength} bytes, got ${secretKey.length}`);
  }
  return nacl.sign.keyPair.fromSecretKey(new Uint8Array(secretKey));
}

export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  return nacl.sign.detached(new Uint8Array(message), new Uint8Array(secretKey));
}

/** True when `signature` is `publicKey`'s signature of `message`; false for any malformed input. */
export function verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== nacl.sign.signatureLength || publicKey.length !== nacl.sign.publicKeyLength) return false;
  return nacl.sign.detached.verify(new Uint8Array(message), new Uint8Array(signature), new Uint8Array(publicKey));
}

/** Short, human-comparable fingerprint of a public key (shown at enrollment and in the admin API). */
export function fingerprint(publicKey: Uint8Array): string {
  const hex = Buffer.from(nacl.hash(new Uint8Array(publicKey)).subarray(0, 10)).toString('hex');
  return hex.match(/.{4}/g)!.join(':');
}
