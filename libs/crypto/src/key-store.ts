import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BoxKeyPair, CryptoError, boxKeyPairFromSecret, fromBase64, generateBoxKeyPair, toBase64 } from './box';

/**
 * Loads the X25519 key pair kept in `file` (JSON, mode 0600), creating it on first use.
 * The secret key never leaves this file; only the public key is sent anywhere.
 */
export async function loadOrCreateBoxKeyPair(file: string): Promise<{ keys: BoxKeyPair; created: boolean }> {
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (text !== undefined) {
    const mode = (await stat(file)).mode & 0o777;
    if (mode & 0o077) {
      throw new CryptoError(`key file ${file} is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file}`);
    }
    let parsed: { boxSecretKey?: unknown };
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new CryptoError(`key file ${file} is not valid JSON`);
    }
    if (typeof parsed.boxSecretKey !== 'string') throw new CryptoError(`key file ${file} has no "boxSecretKey"`);
    return { keys: boxKeyPairFromSecret(fromBase64(parsed.boxSecretKey)), created: false };
  }
  const keys = generateBoxKeyPair();
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(
    file,
    JSON.stringify({ boxPublicKey: toBase64(keys.publicKey), boxSecretKey: toBase64(keys.secretKey) }, null, 2) + '\n',
    { mode: 0o600, flag: 'wx' },
  );
  await chmod(file, 0o600);
  return { keys, created: true };
}
