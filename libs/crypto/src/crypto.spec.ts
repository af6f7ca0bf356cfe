import { mkdtempSync, statSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CryptoError, generateBoxKeyPair, open, seal } from './box';
import { loadOrCreateBoxKeyPair } from './key-store';

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
