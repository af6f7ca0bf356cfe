import { Inject, Injectable } from '@nestjs/common';
import { fingerprint, fromBase64, toBase64, verify } from '@histofed/crypto';
import { EnrollmentRequest, EnrollmentResponse, PROTOCOL_VERSION, enrollmentSignedBytes } from '@histofed/protocol';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { CoordinatorKeys } from './coordinator-keys';

/** Why an enrollment was refused; the controller turns it into a 4xx. */
export class EnrollmentRefused extends Error {
  constructor(
    readonly kind: 'invalid' | 'conflict',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Sites enroll their public keys (proving they hold the signing key); an administrator approves
 * them. Enrolling again with the same keys is harmless (it reports the status); different keys for
 * a known site are refused until an administrator deletes the site (DELETE /api/sites/:id).
 */
@Injectable()
export class EnrollmentService {
  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    private readonly keys: CoordinatorKeys,
  ) {}

  async enroll(request: EnrollmentRequest): Promise<EnrollmentResponse> {
    const refuse = (kind: 'invalid' | 'conflict', reason: string): never => {
      this.logger.event('warn', 'sites', 'enrollment refused', { siteId: request.siteId, reason });
      throw new EnrollmentRefused(kind, reason);
    };
    if (request.protocolVersion !== PROTOCOL_VERSION) {
      refuse('invalid', `protocol version ${request.protocolVersion} not supported (coordinator speaks ${PROTOCOL_VERSION})`);
    }
    if (!verify(enrollmentSignedBytes(request), fromBase64(request.proof), fromBase64(request.signPublicKey))) {
      refuse('invalid', `enrollment of ${request.siteId}: proof is not a signature by the enrolled signing key`);
    }
    const known = await this.store.getSite(request.siteId);
    // A site enrolled before identities existed keeps its id if it brings the same box key.
    const sameKeys =
      known &&
      known.boxPublicKey === request.boxPublicKey &&
      (known.signPublicKey === null || known.signPublicKey === request.signPublicKey);
    if (known && !sameKeys) {
      refuse('conflict', `site ${request.siteId} is enrolled with other keys; an administrator must delete it (DELETE /api/sites/${request.siteId}) before it can enroll again`);
    }
    const site = await this.store.enrollSite(
      { siteId: request.siteId, boxPublicKey: request.boxPublicKey, signPublicKey: request.signPublicKey },
      this.config.autoApproveSites ? 'approved' : 'pending',
    );
    const signKeyFingerprint = fingerprint(fromBase64(request.signPublicKey));
    if (!known || known.signPublicKey === null) {
      this.logger.event('info', 'sites', 'site enrolled', { siteId: site.siteId, status: site.status, signKeyFingerprint });
    }
    return {
      siteId: site.siteId,
      status: site.status,
      signKeyFingerprint,
      coordinatorBoxPublicKey: toBase64(this.keys.box.publicKey),
    };
  }
}
