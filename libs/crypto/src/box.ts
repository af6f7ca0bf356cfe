import nacl from 'tweetnacl';
import { HistoFedError } from '@histofed/fl-core';

/** Decryption or key errors. The message never contains key material. */
export class CryptoError extends HistoFedError {
  constructor(message: string) {
    super('CRYPTO', message);
  }
}

/** An X25519 key pair for tweetnacl `box`. */
export interface BoxKeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

export function generateBoxKeyPair(): BoxKeyPair {
  return nacl.box.keyPair();
}

export function boxKeyPairFromSecret(secretKey: Uint8Array): BoxKeyPair {
  if (secretKey.length !== nacl.box.secretKeyLength) {
    throw new CryptoError(`box secret key must be ${nacl.box.secretKeyLength} bytes, got ${secretKey.length}`);
  }
  return nacl.box.keyPair.fromSecretKey(secretKey);
}

export interface Sealed {
  readonly nonce: Uint8Array;
  readonly ciphertext: Uint8Array;
}

/**
 * Encrypts and authenticates `plaintext` from the sender to the recipient (X25519 + XSalsa20-Poly1305).
 * Only the recipient can open it, and opening proves it came from the holder of `senderSecretKey`.
 */
export function seal(plaintext: Uint8Array, recipientPublicKey: Uint8Array, senderSecretKey: Uint8Array): Sealed {
  const nonce = nacl.randomBytes(nacl.box.nonceLength);
  const ciphertext = nacl.box(plaintext, nonce, recipientPublicKey, senderSecretKey);
  return { nonce, ciphertext };
}

/** Opens a sealed message; throws a CryptoError if it was tampered with or sealed by another key. */
export function open(sealed: Sealed, senderPublicKey: Uint8Array, recipientSecretKey: Uint8Array, what = 'message'): Uint8Array {
  if (sealed.nonce.length !== nacl.box.nonceLength) {
    throw new CryptoError(`${what}: nonce must be ${nacl.box.nonceLength} bytes, got ${sealed.nonce.length}`);
  }
  if (senderPublicKey.length !== nacl.box.publicKeyLength) {
    throw new CryptoError(`${what}: sender public key must be ${nacl.box.publicKeyLength} bytes`);
  }
  // tweetnacl needs a Uint8Array whose constructor is exactly Uint8Array (Buffers fail its checks).
  const plain = nacl.box.open(
    new Uint8Array(sealed.ciphertext),
    new Uint8Array(sealed.nonce),
    new Uint8Array(senderPublicKey),
    new Uint8Array(recipientSecretKey),
  );
  if (!plain) throw new CryptoError(`${what}: cannot be opened (tampered, or not sealed by the registered site key)`);
  return plain;
}

export const toBase64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
export const fromBase64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));
