import { Injectable } from '@nestjs/common';
import { BoxKeyPair, SigningKeyPair, fingerprint } from '@histofed/crypto';

/**
 * The coordinator's long-term keys, kept in `<data dir>/coordinator-keys.json` (mode 0600):
 * X25519 (sites seal their updates to its public key) and Ed25519 (it signs the final models it
 * sends the sites, who pin its public key when they enroll).
 */
@Injectable()
export class CoordinatorKeys {
  constructor(
    readonly box: BoxKeyPair,
    readonly sign: SigningKeyPair,
  ) {}

  /** The signing key's fingerprint, as sites print it when they pin it. */
  get signKeyFingerprint(): string {
    return fingerprint(this.sign.publicKey);
  }
}
