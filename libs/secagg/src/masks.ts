import { createHash } from 'node:crypto';
import { x25519 } from '@histofed/crypto';
import { SecAggError } from './errors';
import { encodeFields } from './messages';

const PAIRWISE_DOMAIN = 'histofed-secagg-pairwise-v1';

/**
 * The seed of the mask shared by sites a and b: X25519(s_sk_a, s_pk_b) = X25519(s_sk_b, s_pk_a),
 * hashed with the run, round and the (ordered) pair so a seed never repeats across rounds or pairs.
 */
export function pairwiseSeed(secretKey: Uint8Array, peerPublicKey: Uint8Array, a: string, b: string, runId: string, round: number): Uint8Array {
  const shared = x25519(secretKey, peerPublicKey);
  // No result means a low-order public key: the mask would be known to everyone.
  if (!shared) throw new SecAggError(`sites ${a} and ${b}: an s public key is degenerate`);
  const [lo, hi] = a < b ? [a, b] : [b, a];
  const seed = createHash('sha256').update(encodeFields([PAIRWISE_DOMAIN, runId, round, lo, hi, shared])).digest();
  shared.fill(0);
  return new Uint8Array(seed);
}

/** Site `self` adds the pair mask with `peer` when self < peer and subtracts it otherwise, so the pair cancels. */
export const pairwiseSign = (self: string, peer: string): 1 | -1 => (self < peer ? 1 : -1);
