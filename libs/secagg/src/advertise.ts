import { BOX_PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, SIGN_PUBLIC_KEY_LENGTH, verify } from '@histofed/crypto';
import { SecAggError } from './errors';
import { advertiseSignedBytes } from './messages';

/** Stage 1 output of a site: two fresh X25519 public keys for this round, signed with its Ed25519 key. */
export interface AdvertisedKeys {
  /** Encrypts the stage-2 shares sent to this site. */
  readonly cPublicKey: Uint8Array;
  /** Agrees the pairwise masks with this site's neighbours. */
  readonly sPublicKey: Uint8Array;
  /** Ed25519 over `advertiseSignedBytes(runId, round, siteId, cPublicKey, sPublicKey)`. */
  readonly signature: Uint8Array;
}

/** Throws a SecAggError naming `siteId` unless `advertised` carries its valid signature for this run and round. */
export function verifyAdvertised(siteId: string, advertised: AdvertisedKeys, signPublicKey: Uint8Array, runId: string, round: number): void {
  const { cPublicKey, sPublicKey, signature } = advertised;
  if (cPublicKey?.length !== BOX_PUBLIC_KEY_LENGTH || sPublicKey?.length !== BOX_PUBLIC_KEY_LENGTH) {
    throw new SecAggError(`site ${siteId}: advertised keys must be two ${BOX_PUBLIC_KEY_LENGTH}-byte X25519 public keys`);
  }
  if (signature?.length !== SIGNATURE_LENGTH) {
    throw new SecAggError(`site ${siteId}: advertised signature must be ${SIGNATURE_LENGTH} bytes, got ${signature?.length}`);
  }
  if (signPublicKey?.length !== SIGN_PUBLIC_KEY_LENGTH) {
    throw new SecAggError(`site ${siteId}: Ed25519 public key must be ${SIGN_PUBLIC_KEY_LENGTH} bytes, got ${signPublicKey?.length}`);
  }
  const message = advertiseSignedBytes(runId, round, siteId, cPublicKey, sPublicKey);
  if (!verify(message, signature, signPublicKey)) {
    throw new SecAggError(`site ${siteId}: advertised keys have a bad signature (not signed by its registered key for run ${runId} round ${round})`);
  }
}
