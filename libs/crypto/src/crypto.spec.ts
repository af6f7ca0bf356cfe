import nacl from 'tweetnacl';
import { mkdtempSync, statSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CryptoError, generateBoxKeyPair, open, seal } from './box';
import { loadOrCreateBoxKeyPair, loadOrCreateIdentityKeys } from './key-store';
import { signedBytes } from '@histofed/fl-core';
import { fingerprint, generateSigningKeyPair, sign, verify } from './signing';
import { writeFileSync, readFileSync } from 'node:fs';
import { toBase64 } from './box';

describe('sealed messages', () => {
  const site = generateBoxKeyPair();
  const coordinator = generateBoxKeyPair();
  const message = new TextEncoder().encode('weights and counts only');

  it('opens for the recipient, from the registered sender', () => {
    const sealed = seal(message, coordinator.publicKey, site.secretKey);
    expect(Buffer.from(sealed.ciphertext).includes(Buffer.from('weights'))).toBe(false);
    expect(Buffer.from(open(sealed, site.publicKey, coordinator.secretKey)).toString()).toBe('weights and counts only');
  });

  it('refuses a tampered ciphertext or another sender', () => {
    const sealed = seal(message, coordinator.publicKey, site.secretKey);
    const tampered = { ...sealed, ciphertext: Uint8Array.from(sealed.ciphertext) };
    tampered.ciphertext[5] ^= 1;
    expect(() => open(tampered, site.publicKey, coordinator.secretKey, 'update from a')).toThrow(CryptoError);
    const impostor = generateBoxKeyPair();
    expect(() => open(sealed, impostor.publicKey, coordinator.secretKey)).toThrow(/cannot be opened/);
  });

  it('accepts Buffers at odd offsets (as socket.io delivers them)', () => {
    const sealed = seal(message, coordinator.publicKey, site.secretKey);
    const padded = Buffer.alloc(sealed.ciphertext.length + 1);
    padded.set(sealed.ciphertext, 1);
    const view = padded.subarray(1);
    expect(open({ nonce: Buffer.from(sealed.nonce), ciphertext: view }, site.publicKey, coordinator.secretKey)).toEqual(
      message,
    );
  });
});

describe('key store', () => {
  it('creates a 0600 key file once and loads the same keys afterwards', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'hf-keys-')), 'state', 'site-keys.json');
    const first = await loadOrCreateBoxKeyPair(file);
    expect(first.created).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const second = await loadOrCreateBoxKeyPair(file);
    expect(second.created).toBe(false);
    expect(Buffer.from(second.keys.publicKey)).toEqual(Buffer.from(first.keys.publicKey));
  });

  it('refuses a key file others can read', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'hf-keys-')), 'k.json');
    await loadOrCreateBoxKeyPair(file);
    chmodSync(file, 0o644);
    await expect(loadOrCreateBoxKeyPair(file)).rejects.toThrow(/readable by others .*chmod 600/);
  });
});

describe('signatures', () => {
  const keys = generateSigningKeyPair();
  const message = signedBytes('histofed-test-v1', ['run-1', 3, new Uint8Array([1, 2, 3])]);

  it('verify accepts the signer and refuses other keys, other messages and malformed input', () => {
    const signature = sign(message, keys.secretKey);
    expect(verify(message, signature, keys.publicKey)).toBe(true);
    expect(verify(message, signature, generateSigningKeyPair().publicKey)).toBe(false);
    expect(verify(signedBytes('histofed-test-v1', ['run-1', 4, new Uint8Array([1, 2, 3])]), signature, keys.publicKey)).toBe(false);
    expect(verify(message, signature.subarray(1), keys.publicKey)).toBe(false);
  });

  it('signed bytes are unambiguous: domain, field boundaries and types all count', () => {
    const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
    expect(hex(signedBytes('d', ['ab', 'c']))).not.toBe(hex(signedBytes('d', ['a', 'bc'])));
    expect(hex(signedBytes('d', ['1']))).not.toBe(hex(signedBytes('d', [1])));
    expect(hex(signedBytes('d1', ['x']))).not.toBe(hex(signedBytes('d2', ['x'])));
  });

  it('fingerprints are stable and differ between keys', () => {
    expect(fingerprint(keys.publicKey)).toMatch(/^([0-9a-f]{4}:){4}[0-9a-f]{4}$/);
    expect(fingerprint(keys.publicKey)).toBe(fingerprint(Uint8Array.from(keys.publicKey)));
    expect(fingerprint(generateSigningKeyPair().publicKey)).not.toBe(fingerprint(keys.publicKey));
    // The first 10 bytes of SHA-512, as they were computed with nacl.hash: fingerprints already shown stay the same.
    const naclHex = Buffer.from(nacl.hash(new Uint8Array(keys.publicKey)).subarray(0, 10)).toString('hex');
    expect(fingerprint(keys.publicKey)).toBe(naclHex.match(/.{4}/g)!.join(':'));
  });
});

describe('identity key file', () => {
  it('holds a box and a signing key pair, created once with mode 0600', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'hf-keys-')), 'site-keys.json');
    const first = await loadOrCreateIdentityKeys(file);
    expect(first.created).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const again = await loadOrCreateIdentityKeys(file);
    expect(again.created).toBe(false);
    expect(toBase64(again.keys.sign.publicKey)).toBe(toBase64(first.keys.sign.publicKey));
    expect(toBase64(again.keys.box.publicKey)).toBe(toBase64(first.keys.box.publicKey));
  });

  it('loads a key file of tweetnacl keys (as sites in the field have) with the same keys', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'hf-keys-')), 'site-keys.json');
    const box = nacl.box.keyPair();
    const signKeys = nacl.sign.keyPair();
    const body = { boxPublicKey: toBase64(box.publicKey), boxSecretKey: toBase64(box.secretKey), signPublicKey: toBase64(signKeys.publicKey), signSecretKey: toBase64(signKeys.secretKey) };
    writeFileSync(file, JSON.stringify(body), { mode: 0o600 });
    const { keys, created } = await loadOrCreateIdentityKeys(file);
    expect(created).toBe(false);
    expect(toBase64(keys.box.publicKey)).toBe(body.boxPublicKey);
    expect(toBase64(keys.sign.publicKey)).toBe(body.signPublicKey);
    expect(toBase64(keys.sign.secretKey)).toBe(body.signSecretKey);
    const message = new TextEncoder().encode('hello');
    expect(toBase64(sign(message, keys.sign.secretKey))).toBe(toBase64(nacl.sign.detached(message, signKeys.secretKey)));
  });

  it('adds a signing key to a file written before signing keys existed, keeping its box key', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'hf-keys-')), 'site-keys.json');
    const { keys } = await loadOrCreateIdentityKeys(file);
    const { boxPublicKey, boxSecretKey } = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ boxPublicKey, boxSecretKey }), { mode: 0o600 });
    const upgraded = await loadOrCreateIdentityKeys(file);
    expect(toBase64(upgraded.keys.box.publicKey)).toBe(toBase64(keys.box.publicKey));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const reloaded = await loadOrCreateIdentityKeys(file);
    expect(reloaded.created).toBe(false);
    expect(toBase64(reloaded.keys.sign.publicKey)).toBe(toBase64(upgraded.keys.sign.publicKey));
  });
});
