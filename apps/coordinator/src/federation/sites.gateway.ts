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
  HelloAck,
  SITE_NAMESPACE,
  SiteEvents,
  sealedUpdateSchema,
  siteHelloSchema,
  taskFailedSchema,
  validateMessage,
} from '@histofed/protocol';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import { ContributionService } from './contribution.service';
import { SiteSessionsService } from './site-sessions.service';

/**
 * Thin socket.io gateway for sites: validates every payload against libs/protocol, replies with
 * an ack (never throws: a handler that throws would leave the site without an answer), and
 * delegates to the services.
 */
@WebSocketGateway({ namespace: SITE_NAMESPACE })
export class SitesGateway implements OnGatewayConnection, OnGatewayDisconnect {
  constructor(
    private readonly sessions: SiteSessionsService,
    private readonly contributions: ContributionService,
    @Inject(LOGGER) private readonly logger: JsonLogger,
  ) {
    sessions.onDisconnect((siteId) => contributions.siteLeft(siteId));
  }

  handleConnection(socket: Socket): void {
    this.logger.event('debug', 'gateway', 'socket connected', { socketId: socket.id });
  }

  handleDisconnect(socket: Socket): void {
    this.sessions.disconnected(socket.id);
  }

  @SubscribeMessage(SiteEvents.hello)
  async hello(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<HelloAck> {
    return this.guard(socket, SiteEvents.hello, async () => {
      const v = validateMessage(siteHelloSchema, body, SiteEvents.hello);
      if (!v.ok) return this.refuse(socket, v.reason);
      const ack = await this.sessions.hello(socket, v.value);
      if (!ack.ok) this.logger.event('warn', 'gateway', 'hello refused', { socketId: socket.id, reason: ack.error });
      return ack;
    });
  }

  @SubscribeMessage(SiteEvents.update)
  async update(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<Ack> {
    return this.guard(socket, SiteEvents.update, async () => {
      const siteId = this.sessions.siteOf(socket.id);
      if (!siteId) return this.refuse(socket, `${SiteEvents.update} before ${SiteEvents.hello}`);
      const v = validateMessage(sealedUpdateSchema, body, SiteEvents.update);
      if (!v.ok) return this.refuse(socket, v.reason, siteId);
      return this.contributions.receive(siteId, v.value);
    });
  }

  @SubscribeMessage(SiteEvents.taskFailed)
  async taskFailed(@ConnectedSocket() socket: Socket, @MessageBody() body: unknown): Promise<Ack> {
    return this.guard(socket, SiteEvents.taskFailed, async () => {
      const siteId = this.sessions.siteOf(socket.id);
      if (!siteId) return this.refuse(socket, `${SiteEvents.taskFailed} before ${SiteEvents.hello}`);
      const v = validateMessage(taskFailedSchema, body, SiteEvents.taskFailed);
      if (!v.ok) return this.refuse(socket, v.reason, siteId);
      return this.contributions.failed(siteId, v.value);
    });
  }

  private refuse(socket: Socket, reason: string, siteId?: string): { ok: false; error: string } {
    this.logger.event('warn', 'gateway', 'message rejected', { socketId: socket.id, siteId, reason });
    return { ok: false, error: reason };
  }

  private async guard<T>(socket: Socket, event: string, handler: () => Promise<T>): Promise<T | { ok: false; error: string }> {
    try {
      return await handler();
    } catch (e) {
      this.logger.event('error', 'gateway', 'handler failed', { socketId: socket.id, event, error: (e as Error).message });
      return { ok: false, error: `internal error handling ${event}` };
    }
  }
}
