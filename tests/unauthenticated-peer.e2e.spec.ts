/**
 * What a peer that never authenticates can cost a real coordinator process (issue 13): a binary
 * packet left half-open, a connection that never says hello, too many connections from one address,
 * and a browser page of another site. Each is refused and the connection closed; nothing is held.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io as connect, Socket } from 'socket.io-client';
import WebSocket from 'ws';
import { Federation, startFederation } from '@histofed/harness';
import { SITE_NAMESPACE } from '@histofed/protocol';

const HELLO_TIMEOUT_SECONDS = 3;
const PER_ADDRESS = 4;

describe('an unauthenticated peer', () => {
  let work: string;
  let fed: Federation;
  const open: Socket[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-unauth-'));
    fed = await startFederation({
      dataDir: work,
      workDir: work,
      sites: 0,
      coordinatorEnv: {
        HISTOFED_HELLO_TIMEOUT_SECONDS: String(HELLO_TIMEOUT_SECONDS),
        HISTOFED_MAX_CONNECTIONS_PER_ADDRESS: String(PER_ADDRESS),
        HISTOFED_ALLOWED_ORIGINS: 'https://dashboard.example',
      },
    });
  });
  afterEach(() => {
    for (const s of open.splice(0)) s.disconnect();
  });
  afterAll(async () => {
    await fed?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const client = (extraHeaders?: Record<string, string>) => {
    const s = connect(`${fed.url}${SITE_NAMESPACE}`, { transports: ['websocket'], reconnection: false, forceNew: true, extraHeaders });
    open.push(s);
    return s;
  };
  const connected = (s: Socket) =>
    new Promise<void>((resolve, reject) => {
      s.once('connect', () => resolve());
      s.once('connect_error', (e) => reject(e));
    });
  const refused = (s: Socket) =>
    new Promise<string>((resolve, reject) => {
      s.once('connect', () => reject(new Error('connected although it should have been refused')));
      s.once('connect_error', (e) => resolve(e.message));
    });

  it('is disconnected when it does not authenticate within the hello deadline', async () => {
    const s = client();
    await connected(s);
    const started = Date.now();
    const reason = await Promise.race([
      new Promise<string>((resolve) => s.once('disconnect', resolve)),
      new Promise<string>((resolve) => setTimeout(() => resolve('still connected'), (HELLO_TIMEOUT_SECONDS + 10) * 1000)),
    ]);
    expect(reason).toBe('io server disconnect');
    expect(Date.now() - started).toBeGreaterThanOrEqual((HELLO_TIMEOUT_SECONDS - 1) * 1000);
    await fed.coordinator.waitFor((l) => l.msg === 'connection closed: no signed hello in time', 10_000, 'the deadline log line');
  });

  it('cannot open more connections from one address than the cap', async () => {
    const first = Array.from({ length: PER_ADDRESS }, () => client());
    await Promise.all(first.map(connected));
    expect(await refused(client())).toMatch(/too many connections|xhr|websocket error/i);
    first[0].disconnect();
    await new Promise((r) => setTimeout(r, 300));
    await connected(client());
    await fed.coordinator.waitFor((l) => l.msg === 'connection refused' && String(l.reason).startsWith('too many connections from'), 10_000, 'the refusal log line');
  });

  it('lets at most the cap in from a burst of simultaneous connections', async () => {
    await new Promise((r) => setTimeout(r, 500)); // the previous test's connections are closed
    const burst = Array.from({ length: PER_ADDRESS * 3 }, () => client());
    const outcomes = await Promise.all(
      burst.map((s) =>
        new Promise<'in' | 'out'>((resolve) => {
          s.once('connect', () => resolve('in'));
          s.once('connect_error', () => resolve('out'));
        }),
      ),
    );
    expect(outcomes.filter((o) => o === 'in').length).toBe(PER_ADDRESS);
  });

  it('is refused when a browser page of another origin connects', async () => {
    expect(await refused(client({ origin: 'https://evil.example' }))).toBeTruthy();
    await connected(client({ origin: 'https://dashboard.example' }));
  });

  it('cannot leave a binary packet half-open: a packet announcing more than one attachment closes the connection', async () => {
    const url = `${fed.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`;
    const ws = new WebSocket(url);
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    const messages: string[] = [];
    ws.on('message', (data, isBinary) => {
      if (!isBinary) messages.push(data.toString());
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    // engine.io open, then join the sites' namespace.
    ws.send(`40${SITE_NAMESPACE},`);
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (messages.some((m) => m.startsWith(`40${SITE_NAMESPACE},`))) {
          clearInterval(t);
          resolve();
        }
      }, 20);
    });
    // A binary event announcing two attachments, then only one of them (1 MiB): socket.io's
    // default parser would hold it, waiting for the second, for as long as the peer likes.
    const placeholder = (num: number) => ({ _placeholder: true, num });
    ws.send(`452-${SITE_NAMESPACE},${JSON.stringify(['site:upload-chunk', placeholder(0), placeholder(1)])}`);
    ws.send(Buffer.alloc(1024 * 1024, 7));
    const started = Date.now();
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, (HELLO_TIMEOUT_SECONDS + 5) * 1000))]);
    // Closed by the parser at once, well before the hello deadline would have closed it.
    expect(Date.now() - started).toBeLessThan(1500);
  });
});
