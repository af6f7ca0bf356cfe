import nacl from 'tweetnacl';
import { ed25519Verify } from './curve25519';
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
  if (cPublicKey?.length !== nacl.box.publicKeyLength || sPublicKey?.length !== nacl.box.publicKeyLength) {
    throw new SecAggError(`site ${siteId}: advertised keys must be two ${nacl.box.publicKeyLength}-byte X25519 public keys`);
  }
  if (signature?.length !== nacl.sign.signatureLength) {
    throw new SecAggError(`site ${siteId}: advertised signature must be ${nacl.sign.signatureLength} bytes, got ${signature?.length}`);
  }
  if (signPublicKey?.length !== nacl.sign.publicKeyLength) {
    throw new SecAggError(`site ${siteId}: Ed25519 public key must be ${nacl.sign.publicKeyLength} bytes, got ${signPublicKey?.length}`);
  }
  const message = advertiseSignedBytes(runId, round, siteId, cPublicKey, sPublicKey);
  if (!ed25519Verify(message, signature, signPublicKey)) {
    throw new SecAggError(`site ${siteId}: advertised keys have a bad signature (not signed by its registered key for run ${runId} round ${round})`);
  }
}
