import { Inject, Injectable } from '@nestjs/common';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { fingerprint, fromBase64, toBase64, verify } from '@histofed/crypto';
import { EnrollmentRequest, EnrollmentResponse, PROTOCOL_VERSION, enrollmentSignedBytes } from '@histofed/protocol';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import { SampledLog } from '../logging/sampled-log';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { SerialQueue } from '../persistence/serial-queue';
import { CoordinatorKeys } from './coordinator-keys';

/** Why an enrollment was refused; the controller turns it into a 4xx (invalid 400, forbidden 403, conflict 409, busy 429). */
export class EnrollmentRefused extends Error {
  constructor(
    readonly kind: 'invalid' | 'forbidden' | 'conflict' | 'busy',
    message: string,
  ) {
    super(message);
  }
}

/** An enrollment token as the administrator receives it (once): the token itself is never stored. */
export interface IssuedEnrollmentToken {
  readonly siteId: string;
  readonly token: string;
  readonly expiresAt: string;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * Sites enroll their public keys (proving they hold the signing key); an administrator approves
 * them. Enrolling again with the same keys is harmless (it reports the status); different keys for
 * a known site are refused until an administrator deletes the site (DELETE /api/sites/:id).
 *
 * Anyone can call it, so what it costs is bounded (issue 13): the controller rate-limits it per
 * address; at most `maxPendingSites` enrollments await approval (more are refused until some are
 * approved or expire after `pendingExpiryHours`); an administrator may issue a single-use token
 * for a site id, which then enrolls only with that token (and is approved by it) — nobody can take a
 * hospital's id first — and with `requireToken` every enrollment needs one; refusals are logged
 * sampled (a flood of bad requests costs counting, not log lines).
 */
@Injectable()
export class EnrollmentService {
  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    private readonly keys: CoordinatorKeys,
  ) {
    this.refusals = new SampledLog(logger, 'sites');
  }

  private readonly refusals: SampledLog;
  /**
   * Enrollments are decided one at a time: the checks (known keys, token, pending ceiling) and the
   * write must see the same state, or two requests could both use one token or pass the ceiling.
   * The signature check, the CPU-heavy part, runs before and outside it.
   */
  private readonly decisions = new SerialQueue();

  /** A new single-use token for `siteId`, valid `hours` (it replaces an earlier one). Only its hash is kept. */
  async issueToken(siteId: string, hours = 7 * 24): Promise<IssuedEnrollmentToken> {
    const token = randomBytes(32).toString('base64url');
    const now = new Date();
    const expiresAt = new Date(now.getTime() + hours * 3600_000);
    await this.store.putEnrollmentToken({ siteId, tokenSha256: sha256(token), createdAt: now, expiresAt });
    this.logger.event('info', 'sites', 'enrollment token issued', { siteId, expiresAt: expiresAt.toISOString() });
    return { siteId, token, expiresAt: expiresAt.toISOString() };
  }

  /** Whether `token` is the valid (unexpired) token issued for the site; null when none was issued. */
  private async tokenMatches(siteId: string, token: string | undefined): Promise<boolean | null> {
    const issued = await this.store.getEnrollmentToken(siteId);
    if (!issued) return null;
    if (token === undefined || issued.expiresAt.getTime() < Date.now()) return false;
    const a = Buffer.from(sha256(token), 'hex');
    const b = Buffer.from(issued.tokenSha256, 'hex');
    return a.length === b.length && timingSafeEqual(a, b);
  }

  async enroll(request: EnrollmentRequest): Promise<EnrollmentResponse> {
    const refuse = (kind: EnrollmentRefused['kind'], reason: string): never => {
      this.refusals.warn(`enrollment ${kind}`, 'enrollment refused', { siteId: request.siteId, reason });
      throw new EnrollmentRefused(kind, reason);
    };
    if (request.protocolVersion !== PROTOCOL_VERSION) {
      refuse('invalid', `protocol version ${request.protocolVersion} not supported (coordinator speaks ${PROTOCOL_VERSION})`);
    }
    if (!verify(enrollmentSignedBytes(request), fromBase64(request.proof), fromBase64(request.signPublicKey))) {
      refuse('invalid', `enrollment of ${request.siteId}: proof is not a signature by the enrolled signing key`);
    }
    return this.decisions.run(() => this.decide(request, refuse));
  }

  private async decide(request: EnrollmentRequest, refuse: (kind: EnrollmentRefused['kind'], reason: string) => never): Promise<EnrollmentResponse> {
    const known = await this.store.getSite(request.siteId);
    // A site enrolled before identities existed keeps its id if it brings the same box key.
    const sameKeys =
      known &&
      known.boxPublicKey === request.boxPublicKey &&
      (known.signPublicKey === null || known.signPublicKey === request.signPublicKey);
    if (known && !sameKeys) {
      refuse('conflict', `site ${request.siteId} is enrolled with other keys; an administrator must delete it (DELETE /api/sites/${request.siteId}) before it can enroll again`);
    }
    let tokenApproved = false;
    if (!known) {
      const token = await this.tokenMatches(request.siteId, request.enrollmentToken);
      if (token === false) {
        refuse('forbidden', `site id ${request.siteId} is reserved: enroll with the enrollment token its administrator issued (it may have expired)`);
      }
      if (token === null && this.config.enrollment.requireToken) {
        refuse('forbidden', `this coordinator enrolls only sites holding an enrollment token (POST /api/sites/${request.siteId}/enrollment-token, by an administrator)`);
      }
      tokenApproved = token === true;
      if (!tokenApproved && !this.config.autoApproveSites) {
        // Expired enrollments go first; then the ceiling on those waiting for an administrator.
        const expired = await this.store.deletePendingSitesEnrolledBefore(new Date(Date.now() - this.config.enrollment.pendingExpiryHours * 3600_000));
        if (expired.length > 0) this.logger.event('info', 'sites', 'expired pending enrollments deleted', { sites: expired.slice(0, 20), count: expired.length });
        const pending = await this.store.countSites('pending');
        if (pending >= this.config.enrollment.maxPendingSites) {
          refuse('busy', `${pending} enrollments already await approval (at most ${this.config.enrollment.maxPendingSites}): try again later`);
        }
      }
    }
    const site = await this.store.enrollSite(
      { siteId: request.siteId, boxPublicKey: request.boxPublicKey, signPublicKey: request.signPublicKey },
      this.config.autoApproveSites || tokenApproved ? 'approved' : 'pending',
    );
    if (tokenApproved) {
      // Single use: the id is taken now, by the keys that held the token.
      await this.store.deleteEnrollmentToken(request.siteId);
      this.logger.event('info', 'sites', 'site enrolled with its enrollment token (approved)', { siteId: site.siteId });
    }
    const signKeyFingerprint = fingerprint(fromBase64(request.signPublicKey));
    if (!known || known.signPublicKey === null) {
      this.logger.event('info', 'sites', 'site enrolled', { siteId: site.siteId, status: site.status, signKeyFingerprint });
    }
    return {
      siteId: site.siteId,
      status: site.status,
      signKeyFingerprint,
      coordinatorBoxPublicKey: toBase64(this.keys.box.publicKey),
      coordinatorSignPublicKey: toBase64(this.keys.sign.publicKey),
    };
  }
}
