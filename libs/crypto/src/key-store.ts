import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BoxKeyPair, CryptoError, boxKeyPairFromSecret, fromBase64, generateBoxKeyPair, toBase64 } from './box';
import { SigningKeyPair, generateSigningKeyPair, sign, signingKeyPairFromSecret } from './signing';

/** A party's long-term keys: X25519 to seal/open messages, Ed25519 to sign. */
export interface IdentityKeys {
  readonly box: BoxKeyPair;
  readonly sign: SigningKeyPair;
}

interface KeyFile {
  boxPublicKey: string;
  boxSecretKey: string;
  signPublicKey: string;
  signSecretKey: string;
}

/**
 * Loads the key pairs kept in `file` (JSON, mode 0600), creating them on first use. A file written
 * before signing keys existed gets an Ed25519 key added (its box key is kept). Secret keys never
 * leave this file; only public keys are sent anywhere.
 */
export async function loadOrCreateIdentityKeys(file: string): Promise<{ keys: IdentityKeys; created: boolean }> {
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (text === undefined) {
    const keys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await writeFile(file, serialize(keys), { mode: 0o600, flag: 'wx' });
    await chmod(file, 0o600);
    return { keys, created: true };
  }
  const mode = (await stat(file)).mode & 0o777;
  if (mode & 0o077) {
    throw new CryptoError(`key file ${file} is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file}`);
  }
  let parsed: Partial<Record<keyof KeyFile, unknown>>;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CryptoError(`key file ${file} is not valid JSON`);
  }
  if (typeof parsed.boxSecretKey !== 'string') throw new CryptoError(`key file ${file} has no "boxSecretKey"`);
  const box = boxKeyPairFromSecret(fromBase64(parsed.boxSecretKey));
  if (parsed.signSecretKey === undefined) {
    const keys = { box, sign: generateSigningKeyPair() };
    // Write-then-rename: a crash never leaves a half-written key file behind.
    await writeFile(`${file}.tmp`, serialize(keys), { mode: 0o600 });
    await rename(`${file}.tmp`, file);
    return { keys, created: true };
  }
  if (typeof parsed.signSecretKey !== 'string') throw new CryptoError(`key file ${file}: "signSecretKey" must be a base64 string`);
  return { keys: { box, sign: signingKeyPairFromSecret(fromBase64(parsed.signSecretKey)) }, created: false };
}

/** Only the box key pair of an identity key file (what the coordinator needs to open updates). */
export async function loadOrCreateBoxKeyPair(file: string): Promise<{ keys: BoxKeyPair; created: boolean }> {
  const { keys, created } = await loadOrCreateIdentityKeys(file);
  return { keys: keys.box, created };
}

function serialize(keys: IdentityKeys): string {
  const body: KeyFile = {
    boxPublicKey: toBase64(keys.box.publicKey),
    boxSecretKey: toBase64(keys.box.secretKey),
    signPublicKey: toBase64(keys.sign.publicKey),
    signSecretKey: toBase64(keys.sign.secretKey),
  };
  return JSON.stringify(body, null, 2) + '\n';
}

/** The site's identity as the protocol's message builders take it (libs/protocol SiteSigner). */
export function identitySigner(siteId: string, keys: IdentityKeys) {
  return {
    siteId,
    boxPublicKey: toBase64(keys.box.publicKey),
    signPublicKey: toBase64(keys.sign.publicKey),
    sign: (message: Uint8Array) => sign(message, keys.sign.secretKey),
  };
}
