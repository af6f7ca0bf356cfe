import { BOX_NONCE_LENGTH, BOX_OVERHEAD_LENGTH, randomBytes, secretboxOpen, secretboxSeal } from '@histofed/crypto';
import { SecAggError } from './errors';
import { SharePayload, decodeSharePayload, encodeSharePayload } from './messages';
import { SEED_LENGTH } from './prg';

/**
 * Stage-2 share transport: a tweetnacl-format box (libs/crypto) from the sender's c key to the
 * recipient's c key, nonce prepended. The coordinator routes these without being able to read
 * them. Both directions of a pair use the same precomputed key, boxSharedKey(c_pk_peer, c_sk_self)
 * (nacl.box.before), so each site does one key agreement per neighbour instead of two.
 */

/** A Shamir share of a 32-byte secret: x, then one byte per secret byte. */
export const SHARE_LENGTH = SEED_LENGTH + 1;

export function sealShare(payload: SharePayload, pairKey: Uint8Array): Uint8Array {
  const nonce = randomBytes(BOX_NONCE_LENGTH);
  const box = secretboxSeal(encodeSharePayload(payload), nonce, pairKey);
  const out = new Uint8Array(nonce.length + box.length);
  out.set(nonce);
  out.set(box, nonce.length);
  return out;
}

/** Opens a share and checks it was made by `from` for `to` in this run and round. */
export function openShare(sealed: Uint8Array, expected: Omit<SharePayload, 'bShare' | 'sShare'>, pairKey: Uint8Array): SharePayload {
  const from = `share from site ${expected.from}`;
  if (sealed.length < BOX_NONCE_LENGTH + BOX_OVERHEAD_LENGTH) throw new SecAggError(`${from}: only ${sealed.length} bytes`);
  const plain = secretboxOpen(sealed.subarray(BOX_NONCE_LENGTH), sealed.subarray(0, BOX_NONCE_LENGTH), pairKey);
  if (!plain) throw new SecAggError(`${from}: cannot be opened (tampered, or not encrypted by that site for this site)`);
  const payload = decodeSharePayload(plain);
  if (!payload) throw new SecAggError(`${from}: malformed share payload`);
  for (const field of ['from', 'to', 'runId', 'round'] as const) {
    if (payload[field] !== expected[field]) {
      throw new SecAggError(`${from}: ${field} is ${JSON.stringify(payload[field])}, expected ${JSON.stringify(expected[field])}`);
    }
  }
  const { bShare, sShare } = payload;
  if (bShare.length !== SHARE_LENGTH || sShare.length !== SHARE_LENGTH || bShare[0] === 0 || bShare[0] !== sShare[0]) {
    throw new SecAggError(`${from}: shares must be two ${SHARE_LENGTH}-byte shares with the same non-zero x`);
  }
  return payload;
}
