import { Inject, Injectable } from '@nestjs/common';
import { AvailableSite } from '@histofed/aggregation';
import { randomBytes } from 'node:crypto';
import { fromBase64, toBase64, verify } from '@histofed/crypto';
import {
  ChallengeAck,
  ChallengeRequest,
  CoordinatorToSiteAck,
  CoordinatorToSiteEvent,
  CoordinatorToSitePayload,
  HelloAck,
  PROTOCOL_VERSION,
  RECOMMENDED_MAX_MESSAGE_BYTES,
  Refusal,
  SiteHello,
  helloSignedBytes,
  refusal,
  validateCoordinatorToSiteAck,
} from '@histofed/protocol';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { CoordinatorKeys } from './coordinator-keys';

/**
 * What a session needs of its connection: socket.io's server Socket, or a fake in unit specs. Only
 * this service emits on it, through the typed `send`.
 */
export interface SessionSocket {
  readonly id: string;
  timeout(ms: number): { emitWithAck(event: string, payload: unknown): Promise<unknown> };
  disconnect(close?: boolean): unknown;
}

interface Session {
  readonly siteId: string;
  readonly socket: SessionSocket;
  readonly trainSamples: number;
}

/** A challenge is answered on the same connection within this time, or not at all. */
const CHALLENGE_TTL_MS = 60_000;

/**
 * Which sites are connected right now, on which socket, and how to reach them. A connection is
 * authenticated by a hello that signs a fresh challenge with the site's enrolled Ed25519 key; only
 * approved sites pass. A second authenticated connection with the same id replaces the first.
 */
@Injectable()
export class SiteSessionsService {
  private readonly bySocket = new Map<string, Session>();
  private readonly bySite = new Map<string, Session>();
  private readonly disconnectListeners: ((siteId: string) => void)[] = [];
  private readonly connectListeners: ((siteId: string) => void)[] = [];
  /** socket id -> the challenge it was given (single use). */
  private readonly challenges = new Map<string, { siteId: string; challenge: string; expires: number }>();

  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    private readonly keys: CoordinatorKeys,
  ) {}

  /** A fresh random challenge for this connection; the next hello must sign it. */
  challenge(socket: SessionSocket, request: ChallengeRequest): ChallengeAck {
    const challenge = randomBytes(32).toString('base64');
    this.challenges.set(socket.id, { siteId: request.siteId, challenge, expires: Date.now() + CHALLENGE_TTL_MS });
    return { ok: true, challenge };
  }

  async hello(socket: SessionSocket, hello: SiteHello): Promise<HelloAck> {
    const issued = this.challenges.get(socket.id);
    this.challenges.delete(socket.id);
    const id = hello.siteId;
    if (hello.protocolVersion !== PROTOCOL_VERSION) {
      return refusal(`protocol version ${hello.protocolVersion} not supported (coordinator speaks ${PROTOCOL_VERSION})`, 'protocol-version');
    }
    if (!issued || issued.siteId !== id || issued.expires < Date.now()) {
      return refusal(`no valid challenge for ${id} on this connection: ask for one (site:challenge) first`, 'no-challenge');
    }
    const known = await this.store.getSite(id);
    if (!known) return refusal(`site ${id} is not enrolled: run histofed-site enroll`, 'not-enrolled');
    if (known.signPublicKey === null) {
      return refusal(`site ${id} was enrolled without a signing key: run histofed-site enroll again`, 'enroll-again');
    }
    if (known.boxPublicKey !== hello.boxPublicKey || known.signPublicKey !== hello.signPublicKey) {
      return refusal(`site ${id} is enrolled with other keys`, 'key-mismatch');
    }
    const { signature, ...signed } = hello;
    if (!verify(helloSignedBytes(signed, issued.challenge), fromBase64(signature), fromBase64(known.signPublicKey))) {
      return refusal(`hello from ${id}: signature does not verify with the enrolled key`, 'bad-signature');
    }
    if (known.status === 'revoked') return refusal(`site ${id} is revoked`, 'revoked');
    if (known.status === 'pending') {
      return refusal(`site ${id} is awaiting approval by an administrator (POST /api/sites/${id}/approve)`, 'pending-approval');
    }
    const site = await this.store.recordHello(id, {
      backend: hello.backend,
      software: hello.software,
      trainSamples: hello.trainSamples,
      validationSamples: hello.validationSamples,
      labelledImages: hello.labelledImages ?? 0,
    });
    if (!site) return refusal(`site ${id} is not enrolled: run histofed-site enroll`, 'not-enrolled');
    const previous = this.bySite.get(hello.siteId);
    if (previous && previous.socket.id !== socket.id) {
      this.bySocket.delete(previous.socket.id);
      previous.socket.disconnect(true);
    }
    const session = { siteId: hello.siteId, socket, trainSamples: hello.trainSamples };
    this.bySocket.set(socket.id, session);
    this.bySite.set(hello.siteId, session);
    this.logger.event('info', 'sites', 'site connected', {
      siteId: hello.siteId,
      status: site.status,
      backend: hello.backend,
      trainSamples: hello.trainSamples,
      ...(hello.labelledImages !== undefined ? { labelledImages: hello.labelledImages } : {}),
    });
    // Active learning: the site says how many images its pathologists labelled — a count, nothing more.
    const labelled = hello.labelledImages ?? 0;
    if (labelled !== known.labelledImages) {
      this.logger.event('info', 'sites', labelled > known.labelledImages ? 'site labelled new images' : 'site has fewer labelled images', {
        siteId: hello.siteId,
        newImages: labelled - known.labelledImages,
        labelledImages: labelled,
        text: `${hello.siteId} labelled ${labelled - known.labelledImages} new images (${labelled} in all)`,
      });
    }
    // Called before the hello's ack goes out: a listener that sends the site something defers it.
    for (const l of this.connectListeners) l(hello.siteId);
    return {
      ok: true,
      coordinatorBoxPublicKey: toBase64(this.keys.box.publicKey),
      coordinatorSignPublicKey: toBase64(this.keys.sign.publicKey),
      maxMessageBytes: RECOMMENDED_MAX_MESSAGE_BYTES,
      maxUpdateBytes: this.config.maxModelBytes,
    };
  }

  siteOf(socketId: string): string | undefined {
    return this.bySocket.get(socketId)?.siteId;
  }

  disconnected(socketId: string): void {
    this.challenges.delete(socketId);
    const s = this.bySocket.get(socketId);
    if (!s) return;
    this.bySocket.delete(socketId);
    if (this.bySite.get(s.siteId)?.socket.id === socketId) {
      this.bySite.delete(s.siteId);
      this.logger.event('info', 'sites', 'site disconnected', { siteId: s.siteId });
      for (const l of this.disconnectListeners) l(s.siteId);
    }
  }

  onDisconnect(listener: (siteId: string) => void): void {
    this.disconnectListeners.push(listener);
  }

  /** Called with the site id whenever a site authenticates (before its hello is acknowledged). */
  onConnect(listener: (siteId: string) => void): void {
    this.connectListeners.push(listener);
  }

  isConnected(siteId: string): boolean {
    return this.bySite.has(siteId);
  }

  connectedSiteIds(): string[] {
    return [...this.bySite.keys()].sort();
  }

  /** Every site an administrator approved, connected or not. */
  async approvedSiteIds(): Promise<string[]> {
    return (await this.store.listSites())
      .filter((s) => s.status === 'approved')
      .map((s) => s.siteId)
      .sort();
  }

  /** Connected sites that an administrator approved. */
  async available(): Promise<AvailableSite[]> {
    const approved = new Set((await this.store.listSites()).filter((s) => s.status === 'approved').map((s) => s.siteId));
    return [...this.bySite.values()]
      .filter((s) => approved.has(s.siteId))
      .map((s) => ({ siteId: s.siteId, trainSamples: s.trainSamples }))
      .sort((a, b) => a.siteId.localeCompare(b.siteId));
  }

  /**
   * Sends `event` to a connected site and resolves with its acknowledgement, validated against the
   * event's ack schema (libs/protocol events.ts). Never rejects: a site that is not connected, does
   * not answer within `timeoutMs` (or disconnects first) or answers something malformed yields a
   * refusal with the matching code ('not-connected', 'no-answer', 'invalid-ack').
   */
  async send<E extends CoordinatorToSiteEvent>(
    siteId: string,
    event: E,
    payload: CoordinatorToSitePayload<E>,
    timeoutMs: number,
  ): Promise<CoordinatorToSiteAck<E> | Refusal> {
    const session = this.bySite.get(siteId);
    if (!session) return refusal(`site ${siteId} is not connected`, 'not-connected');
    let raw: unknown;
    try {
      raw = await session.socket.timeout(timeoutMs).emitWithAck(event, payload);
    } catch (e) {
      return refusal(`site ${siteId} did not acknowledge ${event}: ${(e as Error).message}`, 'no-answer');
    }
    const ack = validateCoordinatorToSiteAck(event, raw, `${event} ack from ${siteId}`);
    return ack.ok ? ack.value : refusal(ack.reason, 'invalid-ack');
  }

  /** Drops a revoked site at once. */
  kick(siteId: string, reason: string): void {
    const s = this.bySite.get(siteId);
    if (!s) return;
    this.logger.event('warn', 'sites', 'disconnecting site', { siteId, reason });
    s.socket.disconnect(true);
  }
}
