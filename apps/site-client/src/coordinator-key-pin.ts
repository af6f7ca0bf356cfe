import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { HistoFedError, ValidationError } from '@histofed/fl-core';
import { fingerprint, fromBase64 } from '@histofed/crypto';
import { signPublicKeySchema } from '@histofed/protocol';

/** `<state dir>/coordinator-key.json`: the coordinator's Ed25519 public key this site trusts. */
export const PINNED_KEY_FILE = 'coordinator-key.json';

const pinSchema = z
  .object({
    signPublicKey: signPublicKeySchema,
    fingerprint: z.string(),
    coordinatorUrl: z.string(),
    pinnedAt: z.string(),
    /** Where it was first seen: the enrollment response, or (a site enrolled before keys were pinned) a hello's answer. */
    pinnedOn: z.enum(['enroll', 'hello']),
  })
  .strict();
export type PinnedCoordinatorKey = z.infer<typeof pinSchema>;

/** The coordinator presented a signing key other than the one this site pinned. */
export class CoordinatorKeyMismatch extends HistoFedError {
  constructor(
    readonly pinned: PinnedCoordinatorKey,
    readonly presented: string,
    file: string,
  ) {
    super(
      'COORDINATOR_KEY_MISMATCH',
      `the coordinator's signing key changed: it presents fingerprint ${fingerprint(fromBase64(presented))}, this site pinned ` +
        `${pinned.fingerprint} (${pinned.pinnedOn} with ${pinned.coordinatorUrl}, ${pinned.pinnedAt}). Someone may be impersonating the ` +
        `coordinator. If its administrator confirms the new fingerprint (the coordinator logs it at start-up), delete ${file} and enroll again.`,
    );
  }
}

/** The pinned key, or null when this site has none yet (it enrolled before keys were pinned, or never). */
export async function readPinnedCoordinatorKey(stateDir: string): Promise<PinnedCoordinatorKey | null> {
  const file = join(stateDir, PINNED_KEY_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ValidationError(`${file}: not valid JSON; compare the coordinator's fingerprint with its administrator, delete the file and enroll again`);
  }
  const parsed = pinSchema.safeParse(raw);
  if (!parsed.success) throw new ValidationError(`${file}: not a pinned coordinator key (${parsed.error.issues[0]?.message}); delete it and enroll again`);
  return parsed.data;
}

/**
 * Trust on first use, as SSH does: the first key a coordinator presents (at enrollment, or at a
 * hello for a site that enrolled before keys were pinned) is written to `<state dir>/coordinator-key.json`
 * (mode 0600, atomically); later the same key is accepted and another one refused with
 * CoordinatorKeyMismatch. Nothing is ever replaced silently.
 */
export async function pinCoordinatorKey(
  stateDir: string,
  signPublicKey: string,
  coordinatorUrl: string,
  on: PinnedCoordinatorKey['pinnedOn'],
): Promise<{ status: 'pinned' | 'matches'; pin: PinnedCoordinatorKey }> {
  const file = join(stateDir, PINNED_KEY_FILE);
  const valid = signPublicKeySchema.safeParse(signPublicKey);
  if (!valid.success) throw new ValidationError(`the coordinator's signing key is not an Ed25519 public key: ${valid.error.issues[0]?.message}`);
  const existing = await readPinnedCoordinatorKey(stateDir);
  if (existing) {
    if (existing.signPublicKey !== signPublicKey) throw new CoordinatorKeyMismatch(existing, signPublicKey, file);
    return { status: 'matches', pin: existing };
  }
  const pin: PinnedCoordinatorKey = {
    signPublicKey,
    fingerprint: fingerprint(fromBase64(signPublicKey)),
    coordinatorUrl,
    pinnedAt: new Date().toISOString(),
    pinnedOn: on,
  };
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(pin, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, file);
  return { status: 'pinned', pin };
}
