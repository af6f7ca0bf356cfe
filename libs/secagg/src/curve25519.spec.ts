import nacl from 'tweetnacl';
import { ed25519Sign, ed25519Verify, x25519, x25519PublicKey } from './curve25519';

describe('native Ed25519 / X25519 on tweetnacl keys', () => {
  it('signs exactly like nacl.sign.detached, and verifies what nacl signs', () => {
    const keys = nacl.sign.keyPair();
    const message = nacl.randomBytes(100);
    const signature = ed25519Sign(message, keys.secretKey);
    expect(Buffer.from(signature).equals(Buffer.from(nacl.sign.detached(message, keys.secretKey)))).toBe(true);
    expect(ed25519Verify(message, signature, keys.publicKey)).toBe(true);
    expect(ed25519Verify(message.map((b, i) => (i === 0 ? b ^ 1 : b)), signature, keys.publicKey)).toBe(false);
    expect(ed25519Verify(message, signature, nacl.sign.keyPair().publicKey)).toBe(false);
    expect(ed25519Verify(message, signature, new Uint8Array(5))).toBe(false);
  });

  it('agrees keys exactly like nacl.scalarMult, including unclamped tweetnacl secret keys', () => {
    const a = nacl.box.keyPair();
    const b = nacl.box.keyPair();
    expect(Buffer.from(x25519PublicKey(a.secretKey)).equals(Buffer.from(a.publicKey))).toBe(true);
    const shared = x25519(a.secretKey, b.publicKey)!;
    expect(Buffer.from(shared).equals(Buffer.from(nacl.scalarMult(a.secretKey, b.publicKey)))).toBe(true);
    expect(Buffer.from(x25519(b.secretKey, a.publicKey)!).equals(Buffer.from(shared))).toBe(true);
  });

  it('gives no shared secret for a low-order public key', () => {
    expect(x25519(nacl.box.keyPair().secretKey, new Uint8Array(32))).toBeUndefined();
    expect(x25519(nacl.box.keyPair().secretKey, Uint8Array.of(1, ...new Uint8Array(31)))).toBeUndefined();
  });
});
