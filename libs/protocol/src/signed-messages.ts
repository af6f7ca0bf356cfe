import { signedBytes } from '@histofed/fl-core';
import type { EnrollmentRequest, SealedUpdate, SiteHello } from './messages';

/**
 * What each signature covers. Every domain label is distinct, so a signature made for one message
 * kind can never be presented as another; the fields bind it to one site, key set, run and round.
 */

export function enrollmentSignedBytes(r: Omit<EnrollmentRequest, 'proof'>): Uint8Array {
  return signedBytes('histofed-enroll-v1', [r.protocolVersion, r.siteId, r.boxPublicKey, r.signPublicKey]);
}

/** The challenge is the coordinator's fresh random value for this connection (base64). */
export function helloSignedBytes(h: Omit<SiteHello, 'signature'>, challenge: string): Uint8Array {
  return signedBytes('histofed-hello-v1', [
    challenge,
    h.protocolVersion,
    h.siteId,
    h.boxPublicKey,
    h.signPublicKey,
    h.backend,
    h.software,
    h.trainSamples,
    h.validationSamples,
    // Signed when sent, so a hello without it signs the same bytes as before it existed.
    ...(h.labelledImages !== undefined ? [h.labelledImages] : []),
  ]);
}

/** Binds the contribution to run, round, kind, site, its nonce and the exact ciphertext (hash and size). */
export function updateSignedBytes(u: Omit<SealedUpdate, 'signature' | 'uploadId'>): Uint8Array {
  return signedBytes('histofed-update-v1', [u.runId, u.round, u.kind, u.siteId, u.nonce, u.sealedSha256, u.sealedBytes]);
}
