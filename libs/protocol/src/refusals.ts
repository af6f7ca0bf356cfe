import { z } from 'zod';

/**
 * Why a request was refused, machine-readable, next to the human `error`. Receivers branch on the
 * code, never on the text. A refusal without a code (an older peer), or with a code this build does
 * not know (a newer peer), is a generic refusal: `code` is then undefined.
 */
export const refusalCodeSchema = z.enum([
  // ---- authentication (site:challenge, site:hello) ----
  /** The site speaks another protocol version. */
  'protocol-version',
  /** No valid challenge on this connection: ask for one (site:challenge) first. */
  'no-challenge',
  /** The site id is not enrolled: enroll (POST /api/enroll). */
  'not-enrolled',
  /** Enrolled before signing keys existed: enroll again. */
  'enroll-again',
  /** The site id is enrolled with other public keys. */
  'key-mismatch',
  /** The hello's signature does not verify with the enrolled key (or a coordinator's with its pinned key). */
  'bad-signature',
  /** An administrator has not approved the site yet. */
  'pending-approval',
  /** An administrator revoked the site. */
  'revoked',
  // ---- any request ----
  /** A message needs an authenticated connection (site:hello first). */
  'not-authenticated',
  /** The message failed validation. */
  'invalid-message',
  /** The site is busy with another task. */
  'busy',
  /** The receiver failed while handling the message. */
  'internal-error',
  // ---- final models (coordinator:final-models, refused by the site) ----
  /** Signed by a key other than the coordinator key the site pinned, or the site has none pinned. */
  'untrusted-key',
  /** A file's size or SHA-256 differs from the signed list: nothing was installed. */
  'integrity',
  // ---- the sender's own channel (never sent by a peer) ----
  /** The site has no session on this coordinator. */
  'not-connected',
  /** No acknowledgement in time (timeout or disconnect). */
  'no-answer',
  /** The acknowledgement failed validation. */
  'invalid-ack',
]);
export type RefusalCode = z.infer<typeof refusalCodeSchema>;

/** The failure branch of every ack: `error` for people and logs, `code` for programs. */
export const refusalSchema = z.object({
  ok: z.literal(false),
  error: z.string(),
  code: refusalCodeSchema.optional().catch(undefined),
});
export type Refusal = z.infer<typeof refusalSchema>;

/** A refusal, with its code when there is one. */
export function refusal(error: string, code?: RefusalCode): Refusal {
  return code ? { ok: false, error, code } : { ok: false, error };
}
