import { EventEmitter } from 'node:events';
import { SITE_PROGRESS_BURST, SITE_PROGRESS_MAX_PER_SECOND, SiteProgress } from '@histofed/protocol';
import { GUARDS_METADATA } from '@nestjs/common/constants';
import { AdminTokenGuard } from '../admin/admin-token.guard';
import { JsonLogger } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { LIVE_MAX_BUFFERED_BYTES, LiveEventsController, formatServerSentEvent } from './live-events.controller';
import { LIVE_REASON_MAX_CHARS, LiveEvents, LiveMessage, RateLimiter, liveEventSchema, observeStore } from './live-events';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const progress: SiteProgress = { runId: RUN, round: 1, kind: 'round', stage: 'training', epoch: 1, epochs: 2, batch: 3, batches: 9, loss: 0.5 };

describe('live events for the dashboard (issue 17)', () => {
  it('are typed and validated: an event that does not fit its schema is dropped, never sent', () => {
    const problems: string[] = [];
    const live = new LiveEvents(4, (p) => problems.push(p));
    const got: LiveMessage[] = [];
    live.subscribe((m) => got.push(m));
    live.publish({ type: 'run', runId: RUN, status: 'running', completedRounds: 1 });
    live.publish({ type: 'site', siteId: '<b>x</b>', change: 'approved' });
    live.publish({ type: 'round', runId: RUN, round: 2, status: 'completed', reason: 'x'.repeat(LIVE_REASON_MAX_CHARS + 1) });
    live.publish({ type: 'run', runId: RUN, status: 'running', completedRounds: 1, extra: 1 } as never);
    expect(got).toEqual([{ type: 'run', runId: RUN, status: 'running', completedRounds: 1, seq: 1, time: expect.any(String) }]);
    expect(problems).toHaveLength(3);
    expect(problems[0]).toMatch(/^site: siteId: /);
    expect(liveEventSchema.safeParse({ type: 'secagg', runId: RUN, round: 1, stage: 'unmask', sites: ['site-1'] }).success).toBe(true);
    expect(liveEventSchema.safeParse({ type: 'secagg', runId: RUN, round: 1, stage: 'peek', sites: [] }).success).toBe(false);
  });

  it('has a bounded number of subscribers; one that throws does not keep the others from the event', () => {
    const live = new LiveEvents(2);
    const a: number[] = [];
    const unsubscribe = live.subscribe(() => {
      throw new Error('broken stream');
    });
    expect(live.subscribe((m) => a.push(m.seq))).not.toBeNull();
    expect(live.subscribe(() => undefined)).toBeNull();
    expect(live.subscribers).toBe(2);
    live.publish({ type: 'site', siteId: 'site-1', change: 'connected' });
    expect(a).toEqual([1]);
    unsubscribe!();
    expect(live.subscribe(() => undefined)).not.toBeNull();
  });

  it('passes each site\'s progress through a token bucket: a burst, then the sites\' rate', () => {
    let t = 0;
    const live = new LiveEvents(4, undefined, () => t);
    const got: LiveMessage[] = [];
    live.subscribe((m) => got.push(m));
    const accepted = Array.from({ length: SITE_PROGRESS_BURST + 3 }, () => live.siteProgress('site-1', progress)).filter(Boolean).length;
    expect(accepted).toBe(SITE_PROGRESS_BURST);
    expect(live.siteProgress('site-2', progress)).toBe(true); // per site
    t = 1000;
    expect(Array.from({ length: 5 }, () => live.siteProgress('site-1', progress)).filter(Boolean).length).toBe(SITE_PROGRESS_MAX_PER_SECOND);
    expect(got[0]).toEqual({ type: 'progress', siteId: 'site-1', ...progress, seq: 1, time: expect.any(String) });
    live.siteLeft('site-1');
    expect(live.siteProgress('site-1', progress)).toBe(true);
  });

  it('rate limiter: remembers a bounded number of keys', () => {
    const limiter = new RateLimiter(1, 1, () => 0, 2);
    expect(limiter.take('a')).toBe(true);
    expect(limiter.take('a')).toBe(false);
    limiter.take('b');
    limiter.take('c'); // 'a' is forgotten: a fresh bucket
    expect(limiter.take('a')).toBe(true);
  });

  it('publishes what the store records (runs, rounds, contributions, sites) once it is stored', async () => {
    const run = { id: RUN, status: 'running', completedRounds: 2 };
    const inner = {
      updateRun: jest.fn(async () => run),
      saveRound: jest.fn(async () => undefined),
      addContribution: jest.fn(async () => ({ runId: RUN, round: 2, kind: 'round', siteId: 'rogue', status: 'rejected', reason: '<script>x</script>'.repeat(100) })),
      setSiteStatus: jest.fn(async (siteId: string) => (siteId === 'ghost' ? null : { siteId, status: 'approved' })),
      deleteSite: jest.fn(async (siteId: string) => siteId !== 'ghost'),
      listRuns: jest.fn(async () => [run]),
    };
    const live = new LiveEvents();
    const got: LiveMessage[] = [];
    live.subscribe((m) => got.push(m));
    const store = observeStore(inner as unknown as CoordinatorStore, live);
    expect(await store.updateRun(RUN, { completedRounds: 2 })).toBe(run);
    await store.saveRound({ runId: RUN, round: 2, status: 'training', reason: null } as never);
    await store.addContribution({} as never);
    await store.setSiteStatus('site-1', 'approved');
    await store.setSiteStatus('ghost', 'approved');
    await store.deleteSite('site-2');
    await store.deleteSite('ghost');
    expect(await store.listRuns()).toEqual([run]);
    expect(got.map(({ seq: _seq, time: _time, ...e }) => e)).toEqual([
      { type: 'run', runId: RUN, status: 'running', completedRounds: 2 },
      { type: 'round', runId: RUN, round: 2, status: 'training', reason: null },
      { type: 'contribution', runId: RUN, round: 2, kind: 'round', siteId: 'rogue', status: 'rejected', reason: expect.stringMatching(/…$/) },
      { type: 'site', siteId: 'site-1', change: 'approved' },
      { type: 'site', siteId: 'site-2', change: 'deleted' },
    ]);
    expect((got[2] as { reason: string }).reason).toHaveLength(LIVE_REASON_MAX_CHARS);
    // A write that fails publishes nothing.
    inner.updateRun.mockRejectedValueOnce(new Error('db down'));
    await expect(store.updateRun(RUN, {})).rejects.toThrow('db down');
    expect(got).toHaveLength(5);
  });
});

/** Express's response, as much as the stream uses. */
class FakeResponse extends EventEmitter {
  statusCode = 0;
  headers: Record<string, string> = {};
  chunks: string[] = [];
  writableEnded = false;
  writableLength = 0;
  body: unknown;
  status(code: number) {
    this.statusCode = code;
    return this;
  }
  setHeader(k: string, v: string) {
    this.headers[k.toLowerCase()] = v;
    return this;
  }
  flushHeaders() {}
  json(body: unknown) {
    this.body = body;
    this.writableEnded = true;
  }
  write(chunk: string) {
    this.chunks.push(chunk);
    return true;
  }
  end() {
    if (this.writableEnded) return;
    this.writableEnded = true;
    this.emit('close');
  }
}

describe('GET /api/events (server-sent events)', () => {
  const sessions = { onConnect: jest.fn(), onDisconnect: jest.fn(), connectedSiteIds: () => ['site-1'] };
  const controller = (live: LiveEvents) => new LiveEventsController(live, sessions as never, new JsonLogger('test', 'error'));

  it('needs the admin token', () => {
    expect(Reflect.getMetadata(GUARDS_METADATA, LiveEventsController)).toEqual([AdminTokenGuard]);
  });

  it('streams each event as text/event-stream, and stops when the client goes', () => {
    const live = new LiveEvents(2);
    const res = new FakeResponse();
    controller(live).stream(res as never);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.chunks[0]).toMatch(/^retry: \d+\n/);
    live.publish({ type: 'site', siteId: 'site-1', change: 'connected' });
    const sent = res.chunks[1];
    expect(sent).toMatch(/^id: 1\nevent: site\ndata: \{.*\}\n\n$/);
    expect(JSON.parse(sent.split('\n')[2].slice(6))).toEqual(expect.objectContaining({ type: 'site', siteId: 'site-1', change: 'connected' }));
    res.emit('close');
    expect(live.subscribers).toBe(0);
  });

  it('refuses streams over the bound with 503', () => {
    const live = new LiveEvents(1);
    const c = controller(live);
    c.stream(new FakeResponse() as never);
    const second = new FakeResponse();
    c.stream(second as never);
    expect(second.statusCode).toBe(503);
    expect(second.headers['retry-after']).toBeDefined();
    expect(second.body).toEqual(expect.objectContaining({ message: expect.stringMatching(/too many live streams/) }));
  });

  it('closes a stream whose client does not read, and every stream when the coordinator stops', () => {
    const live = new LiveEvents(4);
    const c = controller(live);
    const slow = new FakeResponse();
    const other = new FakeResponse();
    c.stream(slow as never);
    c.stream(other as never);
    slow.writableLength = LIVE_MAX_BUFFERED_BYTES + 1;
    live.publish({ type: 'site', siteId: 'site-1', change: 'connected' });
    expect(slow.writableEnded).toBe(true);
    expect(other.chunks).toHaveLength(2);
    expect(live.subscribers).toBe(1);
    c.onModuleDestroy();
    expect(other.writableEnded).toBe(true);
    expect(live.subscribers).toBe(0);
  });

  it('formats one event per message, its JSON on one line', () => {
    const text = formatServerSentEvent({ type: 'round', runId: RUN, round: 1, status: 'failed', reason: 'a\nb', seq: 7, time: 't' });
    expect(text.split('\n')).toEqual(['id: 7', 'event: round', `data: {"type":"round","runId":"${RUN}","round":1,"status":"failed","reason":"a\\nb","seq":7,"time":"t"}`, '', '']);
  });
});
