import { Inject } from '@nestjs/common';
import {
  ConnectedSocket,
  MessageBody,
  OnGatewayConnection,
  OnGatewayDisconnect,
  SubscribeMessage,
  WebSocketGateway,
} from '@nestjs/websockets';
import type { Socket } from 'socket.io';
import {
  Ack,
  ChallengeAck,
  ChunkEvents,
  FetchChunkAck,
  HelloAck,
  ProgressEvents,
  SITE_NAMESPACE,
  SiteEvents,
  UploadReassembler,
  chunkBytesForLimit,
  RECOMMENDED_MAX_MESSAGE_BYTES,
  Refusal,
  RefusalCode,
  refusal,
  siteToCoordinator,
  validateMessage,
} from '@histofed/protocol';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import { SampledLog } from '../logging/sampled-log';
import { LIVE_EVENTS, LiveEvents } from '../dashboard/live-events';
import { ModelDistribution } from './model-distribution';
import { ContributionService } from './contribution.service';
import { SiteSessionsService } from './site-sessions.service';

/**
 * Thin socket.io gateway for sites: validates every payload against its schema in the protocol's
 * contract table (libs/protocol events.ts siteToCoordinator), replies with
 * an ack (never throws: a handler that throws would leave the site without an answer), and
 * delegates to the services.
 */
@WebSocketGateway({ namespace: SITE_NAMESPACE })
export class SitesGateway implements OnGatewayConnection, OnGatewayDisconnect {
  /** Per authenticated connection: the sealed updates being uploaded in chunks (bounded). */
  private readonly uploads = new Map<string, UploadReassembler>();

  constructor(
    private readonly sessions: SiteSessionsService,
    private readonly contributions: ContributionService,
    private readonly models: ModelDistribution,
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    @Inject(LIVE_EVENTS) private readonly live: LiveEvents,
  ) {
    sessions.onDisconnect((siteId) => contributions.siteLeft(siteId));
    this.refusals = new SampledLog(logger, 'gateway');
  }

  /** Connections that have not authenticated yet, with their deadline. */
  private readonly helloDeadlines = new Map<string, NodeJS.Timeout>();
  private readonly refusals: SampledLog;

  handleConnection(socket: Socket): void {
    this.logger.event('debug', 'gateway', 'socket connected', { socketId: socket.id });
    // A connection must authenticate (signed hello) within the deadline, or it is closed: an
    // unauthenticated peer cannot keep connections (and what they buffer) open.
    const timer = setTimeout(() => {
      this.helloDeadlines.delete(socket.id);
      if (this.sessions.siteOf(socket.id)) return;
      this.refusals.warn('hello deadline', 'connection closed: no signed hello in time', {
        socketId: socket.id,
        address: socket.handshake.address,
        seconds: this.config.socketLimits.helloTimeoutSeconds,
      });
      socket.disconnect(true);
    }, this.config.socketLimits.helloTimeoutSeconds * 1000);
    timer.unref();
    this.helloDeadlines.set(socket.id, timer);
  }

  handleDisconnect(socket: Socket): void {
    clearTimeout(this.helloDeadlines.get(socket.id));
    this.helloDeadlines.delete(socket.id);
    this.uploads.get(socket.id)?.clear();
    this.uploads.delete(socket.id);
    this.sessions.disconnected(socket.id);
  }

  @SubscribeMessage(SiteEvents.challenge)
  async challenge(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<ChallengeAck> {
    return this.guard(socket, SiteEvents.challenge, async () => {
      const v = validateMessage(siteToCoordinator[SiteEvents.challenge].request, body, SiteEvents.challenge);
      if (!v.ok) return this.refuse(socket, v.reason, undefined, 'invalid-message');
      return this.sessions.challenge(socket, v.value);
    });
  }

  @SubscribeMessage(SiteEvents.hello)
  async hello(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<HelloAck> {
    return this.guard(socket, SiteEvents.hello, async () => {
      const v = validateMessage(siteToCoordinator[SiteEvents.hello].request, body, SiteEvents.hello);
      if (!v.ok) return this.refuse(socket, v.reason, undefined, 'invalid-message');
      const ack = await this.sessions.hello(socket, v.value);
      if (!ack.ok) this.refusals.warn('hello', 'hello refused', { socketId: socket.id, code: ack.code, reason: ack.error });
      else {
        clearTimeout(this.helloDeadlines.get(socket.id));
        this.helloDeadlines.delete(socket.id);
      }
      return ack;
    });
  }

  /** A chunk of a sealed update; only authenticated sites may upload (memory is reserved per upload). */
  @SubscribeMessage(ChunkEvents.uploadChunk)
  async uploadChunk(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<Ack> {
    return this.guard(socket, ChunkEvents.uploadChunk, async () => {
      const siteId = this.sessions.siteOf(socket.id);
      if (!siteId) return this.refuse(socket, `${ChunkEvents.uploadChunk} before ${SiteEvents.hello}`, undefined, 'not-authenticated');
      let uploads = this.uploads.get(socket.id);
      if (!uploads) {
        uploads = new UploadReassembler({
          // What the open round expects from this site (its model's size), never more than the configured cap.
          maxTotalBytes: () => Math.min(this.config.maxModelBytes, this.contributions.uploadLimitFor(siteId)),
          maxChunkBytes: chunkBytesForLimit(RECOMMENDED_MAX_MESSAGE_BYTES),
        });
        this.uploads.set(socket.id, uploads);
      }
      const ack = uploads.accept(body);
      return ack.ok ? ack : this.refuse(socket, ack.error, siteId);
    });
  }

  /** A chunk of a global model the site was asked to train from, or of a final model offered to it. */
  @SubscribeMessage(ChunkEvents.fetchChunk)
  async fetchChunk(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<FetchChunkAck> {
    return this.guard(socket, ChunkEvents.fetchChunk, async () => {
      const siteId = this.sessions.siteOf(socket.id);
      if (!siteId) return this.refuse(socket, `${ChunkEvents.fetchChunk} before ${SiteEvents.hello}`, undefined, 'not-authenticated');
      const ack = await this.models.serveTo(siteId, body);
      return ack.ok ? ack : this.refuse(socket, ack.error, siteId);
    });
  }

  @SubscribeMessage(SiteEvents.update)
  async update(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<Ack> {
    return this.guard(socket, SiteEvents.update, async () => {
      const siteId = this.sessions.siteOf(socket.id);
      if (!siteId) return this.refuse(socket, `${SiteEvents.update} before ${SiteEvents.hello}`, undefined, 'not-authenticated');
      const v = validateMessage(siteToCoordinator[SiteEvents.update].request, body, SiteEvents.update);
      if (!v.ok) return this.refuse(socket, v.reason, siteId);
      const uploads = this.uploads.get(socket.id);
      if (!uploads) return this.refuse(socket, `${SiteEvents.update}: upload ${v.value.uploadId} is unknown on this connection`, siteId);
      const sealed = uploads.take(v.value.uploadId, v.value.sealedSha256);
      if (!sealed.ok) return this.refuse(socket, `${SiteEvents.update}: ${sealed.reason}`, siteId);
      return this.contributions.receive(siteId, v.value, sealed.value);
    });
  }

  @SubscribeMessage(SiteEvents.taskFailed)
  async taskFailed(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<Ack> {
    return this.guard(socket, SiteEvents.taskFailed, async () => {
      const siteId = this.sessions.siteOf(socket.id);
      if (!siteId) return this.refuse(socket, `${SiteEvents.taskFailed} before ${SiteEvents.hello}`, undefined, 'not-authenticated');
      const v = validateMessage(siteToCoordinator[SiteEvents.taskFailed].request, body, SiteEvents.taskFailed);
      if (!v.ok) return this.refuse(socket, v.reason, siteId);
      return this.contributions.failed(siteId, v.value);
    });
  }

  /**
   * Issue 17: a site's task progress, for the dashboard. Only from an authenticated site, about a
   * task an open round awaits from it, within its rate (libs/protocol site-progress.ts); refusals
   * are logged sampled (a misbehaving site must not flood the log either).
   */
  @SubscribeMessage(ProgressEvents.progress)
  async progress(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<Ack> {
    return this.guard(socket, ProgressEvents.progress, async () => {
      const siteId = this.sessions.siteOf(socket.id);
      const refuse = (reason: string, code?: RefusalCode): Refusal => {
        this.refusals.warn('progress', 'progress refused', { socketId: socket.id, siteId, code, reason });
        return refusal(reason, code);
      };
      if (!siteId) return refuse(`${ProgressEvents.progress} before ${SiteEvents.hello}`, 'not-authenticated');
      const v = validateMessage(siteToCoordinator[ProgressEvents.progress].request, body, ProgressEvents.progress);
      if (!v.ok) return refuse(v.reason, 'invalid-message');
      const p = v.value;
      if (!this.contributions.awaits(siteId, p.runId, p.round, p.kind)) return refuse(`${ProgressEvents.progress}: no open ${p.kind} task for run ${p.runId} round ${p.round} awaits site ${siteId}`);
      if (!this.live.siteProgress(siteId, p)) return refuse(`${ProgressEvents.progress}: more than the site's progress budget`, 'busy');
      return { ok: true };
    });
  }

  /**
   * A refusal for the ack, logged. Contribution refusals (malformed updates, bad signatures, ...)
   * still travel without a code: the site only logs them (it does not act on them).
   */
  private refuse(socket: Socket, reason: string, siteId?: string, code?: RefusalCode): Refusal {
    this.logger.event('warn', 'gateway', 'message rejected', { socketId: socket.id, siteId, code, reason });
    return refusal(reason, code);
  }

  private async guard<T>(socket: Socket, event: string, handler: () => Promise<T>): Promise<T | Refusal> {
    try {
      return await handler();
    } catch (e) {
      this.logger.event('error', 'gateway', 'handler failed', { socketId: socket.id, event, error: (e as Error).message });
      return refusal(`internal error handling ${event}`, 'internal-error');
    }
  }
}
