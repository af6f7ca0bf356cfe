import { z } from 'zod';
import { SITE_PROGRESS_BURST, SITE_PROGRESS_MAX_PER_SECOND, SITE_PROGRESS_STAGES, SiteProgress, siteIdSchema, taskKindSchema } from '@histofed/protocol';
import type { CoordinatorStore } from '../persistence/coordinator-store';

/**
 * What the dashboard is told as it happens (issue 17), pushed over server-sent events
 * (GET /api/events, live-events.controller.ts). Each event names what changed; the page reads the
 * admin API for the details, except for a site's task progress, which the event carries whole.
 * Every event is validated against this schema before it is sent.
 */
const runId = z.string().uuid();
const round = z.number().int().min(0);
/** Reasons are shown to the administrator (as text); long ones are cut. */
export const LIVE_REASON_MAX_CHARS = 500;
const reason = z.string().max(LIVE_REASON_MAX_CHARS).nullable();

/** The secure-aggregation stages a round goes through (runs/secure-aggregation.ts). */
export const SECAGG_STAGES = ['advertise', 'share-keys', 'masked-updates', 'unmask'] as const;
export type SecAggStage = (typeof SECAGG_STAGES)[number];

export const liveEventSchema = z.discriminatedUnion('type', [
  /** A site enrolled, was approved, revoked or deleted, connected or disconnected. */
  z.object({ type: z.literal('site'), siteId: siteIdSchema, change: z.enum(['enrolled', 'pending', 'approved', 'revoked', 'deleted', 'connected', 'disconnected']) }).strict(),
  /** A run was created or its status / progress changed. */
  z.object({ type: z.literal('run'), runId, status: z.enum(['created', 'running', 'completed', 'failed']), completedRounds: z.number().int().min(0) }).strict(),
  /** A round started (training), completed or failed. */
  z.object({ type: z.literal('round'), runId, round, status: z.enum(['training', 'completed', 'failed']), reason }).strict(),
  /** A contribution was accepted or rejected (with its reason). */
  z.object({ type: z.literal('contribution'), runId, round, kind: z.string().max(32), siteId: siteIdSchema, status: z.enum(['accepted', 'rejected']), reason }).strict(),
  /** A site's task progress (libs/protocol site-progress.ts), as the site reported it. */
  z
    .object({
      type: z.literal('progress'),
      siteId: siteIdSchema,
      runId,
      round,
      kind: taskKindSchema,
      stage: z.enum(SITE_PROGRESS_STAGES),
      epoch: z.number().int().min(1).optional(),
      epochs: z.number().int().min(1).optional(),
      batch: z.number().int().min(1).optional(),
      batches: z.number().int().min(1).optional(),
      loss: z.number().finite().optional(),
    })
    .strict(),
  /** A secure-aggregation stage of a round started, with the sites asked. */
  z.object({ type: z.literal('secagg'), runId, round, stage: z.enum(SECAGG_STAGES), sites: z.array(siteIdSchema).max(10_000) }).strict(),
]);
export type LiveEvent = z.infer<typeof liveEventSchema>;
/** As sent: the event with its sequence number (per coordinator process) and time. */
export type LiveMessage = LiveEvent & { readonly seq: number; readonly time: string };

/** Injection token of the coordinator's LiveEvents (built with the store it observes, app.module.ts). */
export const LIVE_EVENTS = Symbol('LIVE_EVENTS');

/** Open live streams (browser tabs) at most, in total: each holds a connection and a subscriber. */
export const LIVE_MAX_SUBSCRIBERS = 16;

/** A per-key token bucket: `burst` at once, then `perSecond`. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
    /** Keys remembered at most (the oldest is forgotten): the limiter's memory is bounded too. */
    private readonly maxKeys = 10_000,
  ) {}

  take(key: string): boolean {
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
      b = { tokens: this.burst, at: t };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond);
    b.at = t;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  forget(key: string): void {
    this.buckets.delete(key);
  }
}

type Listener = (message: LiveMessage) => void;

/**
 * The coordinator's live events: services publish, each open stream subscribes. Bounded: at most
 * `maxSubscribers` streams, and each site's progress messages through a token bucket. An event
 * that does not match liveEventSchema is dropped (and reported to `onInvalid`), never sent.
 */
export class LiveEvents {
  private readonly listeners = new Set<Listener>();
  private seq = 0;
  private readonly progressLimit: RateLimiter;

  constructor(
    readonly maxSubscribers = LIVE_MAX_SUBSCRIBERS,
    private readonly onInvalid: (problem: string) => void = () => undefined,
    now: () => number = Date.now,
  ) {
    this.progressLimit = new RateLimiter(SITE_PROGRESS_MAX_PER_SECOND, SITE_PROGRESS_BURST, now);
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  /** Adds a stream; returns its unsubscribe function, or null when maxSubscribers are open. */
  subscribe(listener: Listener): (() => void) | null {
    if (this.listeners.size >= this.maxSubscribers) return null;
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  publish(event: LiveEvent): void {
    if (this.listeners.size === 0) return;
    const parsed = liveEventSchema.safeParse(event);
    if (!parsed.success) {
      this.onInvalid(`${event?.type ?? 'event'}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
      return;
    }
    const message: LiveMessage = { ...parsed.data, seq: ++this.seq, time: new Date().toISOString() };
    for (const l of [...this.listeners]) {
      try {
        l(message);
      } catch {
        // A failing stream is the stream's problem (it closes itself); the others still get the event.
      }
    }
  }

  /** A validated progress message of an authenticated site: published unless over its budget (false). */
  siteProgress(siteId: string, p: SiteProgress): boolean {
    if (!this.progressLimit.take(siteId)) return false;
    this.publish({ type: 'progress', siteId, ...p });
    return true;
  }

  /** A site left: its progress budget is forgotten. */
  siteLeft(siteId: string): void {
    this.progressLimit.forget(siteId);
  }
}

const cut = (s: string | null | undefined): string | null => (s == null ? null : s.length > LIVE_REASON_MAX_CHARS ? `${s.slice(0, LIVE_REASON_MAX_CHARS - 1)}…` : s);

/**
 * The store, with every write that changes what the dashboard shows published as a live event
 * once it is stored (runs, rounds, contributions, site enrollment and status). Reads pass through.
 */
export function observeStore(store: CoordinatorStore, live: LiveEvents): CoordinatorStore {
  const events: { [K in keyof CoordinatorStore]?: (result: unknown, args: unknown[]) => LiveEvent[] } = {
    enrollSite: (r) => {
      const site = r as { siteId: string; status: 'pending' | 'approved' | 'revoked' };
      return [{ type: 'site', siteId: site.siteId, change: site.status === 'pending' ? 'enrolled' : site.status }];
    },
    setSiteStatus: (r) => {
      const site = r as { siteId: string; status: 'pending' | 'approved' | 'revoked' } | null;
      return site ? [{ type: 'site', siteId: site.siteId, change: site.status }] : [];
    },
    deleteSite: (r, [siteId]) => (r === true ? [{ type: 'site', siteId: siteId as string, change: 'deleted' }] : []),
    deletePendingSitesEnrolledBefore: (r) => (r as string[]).map((siteId) => ({ type: 'site', siteId, change: 'deleted' }) as const),
    createRun: (r) => runEvent(r),
    updateRun: (r) => runEvent(r),
    saveRound: (_r, [round]) => {
      const x = round as { runId: string; round: number; status: 'training' | 'completed' | 'failed'; reason: string | null };
      return [{ type: 'round', runId: x.runId, round: x.round, status: x.status, reason: cut(x.reason) }];
    },
    addContribution: (r) => {
      const c = r as { runId: string; round: number; kind: string; siteId: string; status: 'accepted' | 'rejected'; reason: string | null };
      return [{ type: 'contribution', runId: c.runId, round: c.round, kind: c.kind, siteId: c.siteId, status: c.status, reason: cut(c.reason) }];
    },
  };
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      const toEvents = typeof prop === 'string' ? events[prop as keyof CoordinatorStore] : undefined;
      if (!toEvents || typeof value !== 'function') return typeof value === 'function' ? value.bind(target) : value;
      return async (...args: unknown[]) => {
        const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        for (const e of toEvents(result, args)) live.publish(e);
        return result;
      };
    },
  });
}

function runEvent(r: unknown): LiveEvent[] {
  const run = r as { id: string; status: 'created' | 'running' | 'completed' | 'failed'; completedRounds: number };
  return [{ type: 'run', runId: run.id, status: run.status, completedRounds: run.completedRounds }];
}
