import type { Refusal } from '@histofed/protocol';

/** What the site does when the coordinator refuses its hello. */
export interface HelloRefusalPlan {
  /** Enroll (again) before the next hello. */
  readonly enroll: boolean;
  readonly level: 'warn' | 'error';
  /** When to say hello again. */
  readonly retryMs: number;
  /** For the operator: what it takes to get this site in. */
  readonly hint: string;
}

/** While refused for something that may clear by itself (approval, a race), the site asks again this often. */
export const REFUSED_RETRY_MS = 5_000;
/** Refusals that need an administrator or an upgrade: asked again, but less often. */
export const STUCK_RETRY_MS = 60_000;

/**
 * Branches on the refusal's code, never on its text. A refusal without a code (an older
 * coordinator) or with one this site does not know is generic: ask again soon.
 */
export function helloRefusalPlan(refusal: Pick<Refusal, 'code'>): HelloRefusalPlan {
  switch (refusal.code) {
    case 'not-enrolled':
      return { enroll: true, level: 'warn', retryMs: REFUSED_RETRY_MS, hint: 'enrolling; an administrator then approves the site' };
    case 'enroll-again':
      return { enroll: true, level: 'warn', retryMs: REFUSED_RETRY_MS, hint: 'enrolling again with this site’s signing key' };
    case 'pending-approval':
      return { enroll: false, level: 'warn', retryMs: REFUSED_RETRY_MS, hint: 'waiting for an administrator to approve the site' };
    case 'revoked':
      return { enroll: false, level: 'error', retryMs: STUCK_RETRY_MS, hint: 'an administrator revoked this site' };
    case 'key-mismatch':
    case 'bad-signature':
      return {
        enroll: false,
        level: 'error',
        retryMs: STUCK_RETRY_MS,
        hint: 'the coordinator holds other keys for this site id: an administrator must delete the site before it can enroll these keys',
      };
    case 'protocol-version':
      return { enroll: false, level: 'error', retryMs: STUCK_RETRY_MS, hint: 'this site and the coordinator speak different protocol versions: upgrade one of them' };
    default:
      return { enroll: false, level: 'warn', retryMs: REFUSED_RETRY_MS, hint: 'asking again' };
  }
}
