/**
 * The unauthenticated flood of bench:chaos (issue 13): what anyone who can reach the coordinator's
 * port can throw at it without keys, from one loopback address other than the real sites' (so the
 * per-address limits meet the attacker, not the sites). Bounded: a fixed number of connections
 * (each reconnecting after it is closed or refused, until stop), a fixed burst of HTTP requests,
 * and loopback only.
 *
 * - idle socket.io connections that never say hello (the hello deadline closes them; over the
 *   per-address cap they are refused at the handshake);
 * - some of them send half-open binary packets: a socket.io BINARY_EVENT announcing 10
 *   attachments followed by up to 9 large attachment frames and never the 10th (the parser admits
 *   one attachment per packet: the connection is closed instead of holding the frames);
 * - a burst of POST /api/enroll with bad signatures (per-address enrollment throttle);
 * - junk HTTP: unknown routes, admin routes without a token, invalid JSON, an oversized body, and
 *   raw bytes that are not HTTP.
 */
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { ManagerOptions, SocketOptions, io } from 'socket.io-client';
import { generateBoxKeyPair, generateSigningKeyPair, identitySigner } from '@histofed/crypto';
import { SITE_NAMESPACE, SiteEvents, enrollmentRequest } from '@histofed/protocol';

export interface FloodOptions {
  /** The coordinator, e.g. http://127.0.0.1:PORT. */
  readonly url: string;
  /** The loopback address the attackers bind to (not the real sites' 127.0.0.1). */
  readonly localAddress: string;
  /** Concurrent socket.io connections that never authenticate. */
  readonly connections: number;
  /** Every n-th connection sends half-open binary packets (0: none). */
  readonly halfOpenEvery: number;
  /** Size of each attachment frame of a half-open packet. */
  readonly attachmentBytes: number;
  /** Bad-signature enrollment requests (sent at once, `httpConcurrency` at a time). */
  readonly enrollRequests: number;
  /** Junk HTTP requests. */
  readonly junkRequests: number;
  readonly httpConcurrency: number;
}

export interface FloodReport {
  /** Connection attempts (each connection reconnects after it is closed, while the flood lasts). */
  socketAttempts: number;
  /** Attempts the coordinator accepted (the socket.io handshake completed). */
  socketOpened: number;
  /** Attempts refused at the handshake (per-address or total cap). */
  socketRefused: number;
  /** Open connections the coordinator closed (hello deadline, or a refused packet). */
  socketClosedByServer: number;
  /** Most attacker connections open at once. */
  socketPeakOpen: number;
  halfOpenPackets: number;
  attachmentFramesSent: number;
  attachmentMiBSent: number;
  /** Bad-signature enrollments by HTTP status. */
  enrollStatuses: Record<string, number>;
  /** Junk requests by HTTP status ('closed' when the connection was dropped without an answer). */
  junkStatuses: Record<string, number>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const count = (m: Record<string, number>, k: string | number) => (m[String(k)] = (m[String(k)] ?? 0) + 1);

/** The socket.io text frame of a BINARY_EVENT on the sites' namespace announcing `n` attachments. */
function binaryEventHeader(n: number): string {
  const placeholders = Array.from({ length: n }, (_, num) => ({ _placeholder: true, num }));
  return `5${n}-${SITE_NAMESPACE},${JSON.stringify([SiteEvents.update, ...placeholders])}`;
}

export class UnauthenticatedFlood {
  readonly report: FloodReport = {
    socketAttempts: 0,
    socketOpened: 0,
    socketRefused: 0,
    socketClosedByServer: 0,
    socketPeakOpen: 0,
    halfOpenPackets: 0,
    attachmentFramesSent: 0,
    attachmentMiBSent: 0,
    enrollStatuses: {},
    junkStatuses: {},
  };
  private stopped = false;
  private open = 0;
  private readonly running: Promise<unknown>[] = [];
  private readonly frame: Buffer;

  constructor(private readonly o: FloodOptions) {
    this.frame = Buffer.alloc(o.halfOpenEvery > 0 ? o.attachmentBytes : 0, 0x5a);
  }

  /** Starts every attacker; stop() ends them and resolves when all are done. */
  start(): void {
    for (let i = 0; i < this.o.connections; i++) {
      const halfOpen = this.o.halfOpenEvery > 0 && i % this.o.halfOpenEvery === 0;
      this.running.push(this.connectionLoop(halfOpen, i));
    }
    this.running.push(this.httpBurst('enroll', this.o.enrollRequests, (i) => this.badEnrollment(i)));
    this.running.push(this.httpBurst('junk', this.o.junkRequests, (i) => this.junk(i)));
  }

  async stop(): Promise<FloodReport> {
    this.stopped = true;
    await Promise.all(this.running);
    this.report.attachmentMiBSent = Math.round((this.report.attachmentFramesSent * this.o.attachmentBytes) / 2 ** 20);
    return this.report;
  }

  /** One attacker: connects, holds the connection (sending half-open packets if asked) until closed, then again. */
  private async connectionLoop(halfOpen: boolean, index: number): Promise<void> {
    // Spread the first handshakes over a second, as a real flood would arrive.
    await sleep((index * 1000) / Math.max(1, this.o.connections));
    while (!this.stopped) {
      await this.oneConnection(halfOpen);
      if (!this.stopped) await sleep(250 + Math.random() * 500);
    }
  }

  private oneConnection(halfOpen: boolean): Promise<void> {
    this.report.socketAttempts++;
    return new Promise<void>((done) => {
      const options: Record<string, unknown> = {
        transports: ['websocket'],
        reconnection: false,
        forceNew: true,
        timeout: 10_000,
        // Passed through to the ws client (not in socket.io-client's types).
        localAddress: this.o.localAddress,
      };
      const socket = io(`${this.o.url}${SITE_NAMESPACE}`, options as Partial<ManagerOptions & SocketOptions>);
      let opened = false;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        clearInterval(watch);
        if (opened) this.open--;
        socket.close();
        done();
      };
      // Ends the attempt when the flood stops.
      const watch = setInterval(() => this.stopped && finish(), 200);
      socket.on('connect', () => {
        opened = true;
        this.report.socketOpened++;
        this.open++;
        this.report.socketPeakOpen = Math.max(this.report.socketPeakOpen, this.open);
        if (halfOpen) this.sendHalfOpen(socket.io.engine);
      });
      socket.on('connect_error', () => {
        if (!opened) this.report.socketRefused++;
        finish();
      });
      socket.on('disconnect', (reason) => {
        if (reason !== 'io client disconnect') this.report.socketClosedByServer++;
        finish();
      });
    });
  }

  /** 10 attachments announced, 9 sent (while the connection stays open), the 10th never. */
  private sendHalfOpen(engine: { readyState: string; send(data: string | Buffer): unknown }): void {
    engine.send(binaryEventHeader(10));
    this.report.halfOpenPackets++;
    let sent = 0;
    const next = () => {
      if (this.stopped || sent >= 9 || engine.readyState !== 'open') return;
      engine.send(this.frame);
      sent++;
      this.report.attachmentFramesSent++;
      setTimeout(next, 50);
    };
    next();
  }

  private async httpBurst(kind: 'enroll' | 'junk', n: number, one: (i: number) => Promise<string | number>): Promise<void> {
    const statuses = kind === 'enroll' ? this.report.enrollStatuses : this.report.junkStatuses;
    let next = 0;
    const worker = async () => {
      while (next < n && !this.stopped) {
        const i = next++;
        count(statuses, await one(i).catch(() => 'error'));
      }
    };
    await Promise.all(Array.from({ length: this.o.httpConcurrency }, worker));
  }

  /** A well-formed enrollment for a fresh id whose proof is signed over other bytes. */
  private badEnrollment(i: number): Promise<number | string> {
    const signer = identitySigner(`flood-${i}`, { box: generateBoxKeyPair(), sign: generateSigningKeyPair() });
    const body = enrollmentRequest(signer);
    const proof = Buffer.from(body.proof, 'base64');
    proof[0] ^= 0xff;
    return this.http('POST', '/api/enroll', JSON.stringify({ ...body, proof: proof.toString('base64') }), { 'content-type': 'application/json' });
  }

  private junk(i: number): Promise<number | string> {
    switch (i % 6) {
      case 0:
        return this.http('GET', `/no/such/route/${i}`);
      case 1:
        return this.http('GET', '/api/runs');
      case 2:
        return this.http('POST', '/api/enroll', '{"siteId": "half', { 'content-type': 'application/json' });
      case 3:
        return this.http('POST', '/api/runs', JSON.stringify({ pad: 'x'.repeat(2 * 2 ** 20) }), { 'content-type': 'application/json' });
      case 4:
        return this.http('GET', `/api/sites/${'%00'.repeat(8)}`);
      default:
        return this.rawGarbage();
    }
  }

  private http(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<number | string> {
    const url = new URL(path, this.o.url);
    return new Promise((ok) => {
      const req = httpRequest(
        { host: url.hostname, port: url.port, path: url.pathname, method, headers, localAddress: this.o.localAddress, agent: false, timeout: 15_000 },
        (res) => {
          res.resume();
          res.on('end', () => ok(res.statusCode ?? 'none'));
          res.on('error', () => ok('closed'));
        },
      );
      req.on('timeout', () => req.destroy());
      req.on('error', () => ok('closed'));
      req.end(body);
    });
  }

  /** Bytes that are not HTTP: the server answers 400 or drops the connection. */
  private rawGarbage(): Promise<number | string> {
    const url = new URL(this.o.url);
    return new Promise((ok) => {
      const s = tcpConnect({ host: url.hostname, port: Number(url.port), localAddress: this.o.localAddress });
      let answer = '';
      s.setTimeout(5000, () => s.destroy());
      s.on('connect', () => s.write(Buffer.concat([Buffer.from('\x00\x01GARBAGE /\r\n'), Buffer.alloc(4096, 0xff), Buffer.from('\r\n\r\n')])));
      s.on('data', (d) => (answer += d.toString('latin1')));
      s.on('close', () => ok(/^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1] ?? 'closed'));
      s.on('error', () => undefined);
    });
  }
}

/** The process's resident set size in MiB (Linux /proc), or null. */
export async function rssMiB(pid: number): Promise<number | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb ? Math.round(Number(kb) / 1024) : null;
  } catch {
    return null;
  }
}

/** Samples a process's RSS every `intervalMs` into labelled phases. */
export class RssSampler {
  private phase = 'before';
  readonly peaks: Record<string, number> = {};
  readonly last: Record<string, number> = {};
  private readonly timer: NodeJS.Timeout;

  constructor(
    private pid: () => number | undefined,
    intervalMs = 200,
  ) {
    this.timer = setInterval(() => void this.sample(), intervalMs);
  }

  setPhase(phase: string): void {
    this.phase = phase;
  }

  async sample(): Promise<void> {
    const pid = this.pid();
    if (pid === undefined) return;
    const mib = await rssMiB(pid);
    if (mib === null) return;
    const phase = this.phase;
    this.peaks[phase] = Math.max(this.peaks[phase] ?? 0, mib);
    this.last[phase] = mib;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
