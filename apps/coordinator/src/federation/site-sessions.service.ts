import { Inject, Injectable } from '@nestjs/common';
import type { Socket } from 'socket.io';
import { AvailableSite } from '@histofed/aggregation';
import { randomBytes } from 'node:crypto';
import { fromBase64, toBase64, verify } from '@histofed/crypto';
import {
  Ack,
  ChallengeAck,
  ChallengeRequest,
  CoordinatorEvents,
  HelloAck,
  PROTOCOL_VERSION,
  RECOMMENDED_MAX_MESSAGE_BYTES,
  SiteHello,
  TrainTask,
  ackSchema,
  helloSignedBytes,
  validateMessage,
} from '@histofed/protocol';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { CoordinatorKeys } from './coordinator-keys';

interface Session {
  readonly siteId: string;
  readonly socket: Socket;
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
  /** socket id -> the challenge it was given (single use). */
  private readonly challenges = new Map<string, { siteId: string; challenge: string; expires: number }>();

  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    private readonly keys: CoordinatorKeys,
  ) {}

  /** A fresh random challenge for this connection; the next hello must sign it. */
  challenge(socket: Socket, request: ChallengeRequest): ChallengeAck {
    const challenge = randomBytes(32).toString('base64');
    this.challenges.set(socket.id, { siteId: request.siteId, challenge, expires: Date.now() + CHALLENGE_TTL_MS });
    return { ok: true, challenge };
  }

  async hello(socket: Socket, hello: SiteHello): Promise<HelloAck> {
    const issued = this.challenges.get(socket.id);
    this.challenges.delete(socket.id);
    if (hello.protocolVersion !== PROTOCOL_VERSION) {
      return { ok: false, error: `protocol version ${hello.protocolVersion} not supported (coordinator speaks ${PROTOCOL_VERSION})` };
    }
    if (!issued || issued.siteId !== hello.siteId || issued.expires < Date.now()) {
      return { ok: false, error: `no valid challenge for ${hello.siteId} on this connection: ask for one (site:challenge) first` };
    }
    const known = await this.store.getSite(hello.siteId);
    if (!known) return { ok: false, error: `site ${hello.siteId} is not enrolled: run histofed-site enroll` };
    if (known.signPublicKey === null) {
      return { ok: false, error: `site ${hello.siteId} was enrolled without a signing key: run histofed-site enroll again` };
    }
    if (known.boxPublicKey !== hello.boxPublicKey || known.signPublicKey !== hello.signPublicKey) {
      return { ok: false, error: `site ${hello.siteId} is enrolled with other keys` };
    }
    const { signature, ...signed } = hello;
    if (!verify(helloSignedBytes(signed, issued.challenge), fromBase64(signature), fromBase64(known.signPublicKey))) {
      return { ok: false, error: `hello from ${hello.siteId}: signature does not verify with the enrolled key` };
    }
    if (known.status === 'revoked') return { ok: false, error: `site ${hello.siteId} is revoked` };
    if (known.status === 'pending') {
      return { ok: false, error: `site ${hello.siteId} is awaiting approval by an administrator (POST /api/sites/${hello.siteId}/approve)` };
    }
    const site = await this.store.recordHello(hello.siteId, {
      backend: hello.backend,
      software: hello.software,
      trainSamples: hello.trainSamples,
      validationSamples: hello.validationSamples,
    });
    if (!site) return { ok: false, error: `site ${hello.siteId} is not enrolled: run histofed-site enroll` };
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
    });
    return {
      ok: true,
      coordinatorBoxPublicKey: toBase64(this.keys.box.publicKey),
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

  /** Sends a training task; resolves with the site's acknowledgement or a timeout/disconnect error. */
  async sendTask(siteId: string, task: TrainTask, timeoutMs: number): Promise<Ack> {
    const session = this.bySite.get(siteId);
    if (!session) return { ok: false, error: `site ${siteId} is not connected` };
    try {
      const raw = await session.socket.timeout(timeoutMs).emitWithAck(CoordinatorEvents.train, task);
      const ack = validateMessage(ackSchema, raw, `ack from ${siteId}`);
      return ack.ok ? ack.value : { ok: false, error: ack.reason };
    } catch (e) {
      return { ok: false, error: `site ${siteId} did not acknowledge the task: ${(e as Error).message}` };
    }
  }

  /**
   * Sends a request whose answer comes in the ack (secure-aggregation stages); resolves with the
   * raw ack for the caller to validate, rejects on timeout or when the site is not connected.
   */
  async request(siteId: string, event: string, payload: unknown, timeoutMs: number): Promise<unknown> {
    const session = this.bySite.get(siteId);
    if (!session) throw new Error(`site ${siteId} is not connected`);
    return session.socket.timeout(timeoutMs).emitWithAck(event, payload);
  }

  /** Drops a revoked site at once. */
  kick(siteId: string, reason: string): void {
    const s = this.bySite.get(siteId);
    if (!s) return;
    this.logger.event('warn', 'sites', 'disconnecting site', { siteId, reason });
    s.socket.disconnect(true);
  }
}
