import { Controller, Get, Inject, OnModuleDestroy, Res, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { AdminTokenGuard } from '../admin/admin-token.guard';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import { LIVE_EVENTS, LiveEvents, LiveMessage } from './live-events';

/** A comment line this often keeps proxies and the browser from timing the stream out. */
export const LIVE_HEARTBEAT_MS = 15_000;
/** A stream whose unsent bytes exceed this (a client that does not read) is closed; the page reconnects. */
export const LIVE_MAX_BUFFERED_BYTES = 256 * 1024;
/** What the browser waits before reconnecting by itself (the SSE `retry` field). */
export const LIVE_RETRY_MS = 3_000;

/** One server-sent event: `id` is the sequence number, `data` the event as JSON (one line). */
export function formatServerSentEvent(message: LiveMessage): string {
  return `id: ${message.seq}\nevent: ${message.type}\ndata: ${JSON.stringify(message)}\n\n`;
}

/**
 * GET /api/events: the dashboard's live stream (server-sent events, admin token required). The
 * page reads it with fetch (so the token travels in the Authorization header, never in a URL) and
 * reconnects by itself. At most LiveEvents.maxSubscribers streams are open; more are answered 503.
 */
@ApiTags('dashboard')
@ApiBearerAuth()
@UseGuards(AdminTokenGuard)
@Controller('api/events')
export class LiveEventsController implements OnModuleDestroy {
  private readonly streams = new Set<Response>();

  constructor(
    @Inject(LIVE_EVENTS) private readonly live: LiveEvents,
    private readonly sessions: SiteSessionsService,
    @Inject(LOGGER) private readonly logger: JsonLogger,
  ) {
    sessions.onConnect((siteId) => live.publish({ type: 'site', siteId, change: 'connected' }));
    sessions.onDisconnect((siteId) => {
      live.siteLeft(siteId);
      live.publish({ type: 'site', siteId, change: 'disconnected' });
    });
  }

  @Get()
  @ApiOperation({ summary: 'Live events for the dashboard (text/event-stream): sites, runs, rounds, contributions, site progress, secure-aggregation stages' })
  @ApiProduces('text/event-stream')
  stream(@Res() res: Response): void {
    const heartbeat = setInterval(() => res.write(': ping\n\n'), LIVE_HEARTBEAT_MS);
    heartbeat.unref();
    const close = () => {
      clearInterval(heartbeat);
      unsubscribe?.();
      this.streams.delete(res);
      if (!res.writableEnded) res.end();
    };
    const unsubscribe = this.live.subscribe((message) => {
      if (res.writableLength > LIVE_MAX_BUFFERED_BYTES) {
        this.logger.event('warn', 'dashboard', 'live stream closed: the client does not read it', { buffered: res.writableLength });
        close();
        return;
      }
      res.write(formatServerSentEvent(message));
    });
    if (!unsubscribe) {
      clearInterval(heartbeat);
      res.status(503).setHeader('Retry-After', String(LIVE_RETRY_MS / 1000));
      res.json({ statusCode: 503, message: `too many live streams are open (at most ${this.live.maxSubscribers}): close another dashboard tab` });
      return;
    }
    this.streams.add(res);
    res.status(200);
    res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Accel-Buffering', 'no');
    res.flushHeaders();
    res.write(`retry: ${LIVE_RETRY_MS}\n: connected sites ${this.sessions.connectedSiteIds().length}\n\n`);
    // (The response's 'close': the request's fires once its body is read, for a GET at once.)
    res.on('close', close);
    res.on('error', close);
  }

  /** Open streams would keep the HTTP server from closing: they end first. */
  onModuleDestroy(): void {
    for (const res of [...this.streams]) res.end();
    this.streams.clear();
  }
}
