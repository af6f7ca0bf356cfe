/**
 * A lightweight simulated site speaking the real protocol (as the harness's RogueSite does):
 * enrollment + signed hello, then each coordinator:train task is answered with a signed, sealed
 * site:update whose weights are the received global weights plus small random noise (same layout),
 * so every contribution is accepted; in secure-aggregation rounds it answers the SecAgg+ stages
 * (libs/secagg SiteSecureAggregation) and sends the masked update instead. Bytes are counted at
 * the Engine.IO packet level (text packets + binary attachments), as the client sends and receives them.
 */
import { io, Socket } from 'socket.io-client';
import { IdentityKeys, fromBase64, generateBoxKeyPair, generateSigningKeyPair, identitySigner, seal, toBase64 } from '@histofed/crypto';
import { decodeWeights, namedTensor, parameterCount } from '@histofed/fl-core';
import { SiteSecureAggregation } from '@histofed/secagg';
import {
  Ack,
  CoordinatorEvents,
  SITE_NAMESPACE,
  SiteEvents,
  SiteSigner,
  TrainTask,
  ChunkEvents,
  authenticate,
  chunkBytesForLimit,
  deliverUpdate,
  downloadInChunks,
  SecAggEvents,
  encodeMaskedUpdateEnvelope,
  encodeUpdateEnvelope,
  enrollmentRequest,
  prepareUpdate,
  requestEnrollment,
} from '@histofed/protocol';

export interface RoundTrace {
  /** performance.now() when the task arrived. */
  taskAt: number;
  /** performance.now() of the round's first message (the secure-aggregation advertise request, else the task). */
  startAt: number;
  /** Bytes received for this round: the task, the model's chunks (fetched after the task), acks, pings. */
  downloadBytes: number;
  /** performance.now() when the update message was sent (its sealed bytes already uploaded in chunks). */
  sentAt?: number;
  /** performance.now() when the update's ack arrived. */
  ackAt?: number;
  /** Bytes sent from the task's arrival until the update's ack (train ack + update + attachment). */
  uploadBytes?: number;
  parameters: number;
}

const packetBytes = (data: unknown): number => {
  if (data === undefined || data === null) return 1;
  if (typeof data === 'string') return 1 + Buffer.byteLength(data);
  if (data instanceof ArrayBuffer) return data.byteLength;
  if (ArrayBuffer.isView(data)) return data.byteLength;
  return 0;
};

/** Serializes the CPU-heavy update building (decode, noise, seal) across all simulated sites. */
let workQueue: Promise<unknown> = Promise.resolve();
const enqueue = <T>(job: () => Promise<T>): Promise<T> => {
  const next = workQueue.then(job, job);
  workQueue = next.catch(() => undefined);
  return next;
};

export class SimSite {
  readonly keys: IdentityKeys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
  private readonly signer: SiteSigner;
  readonly socket: Socket;
  coordinatorKey?: Uint8Array;
  readonly rounds = new Map<number, RoundTrace>();
  readonly errors: string[] = [];
  private received = 0;
  private chunkBytes = chunkBytesForLimit(1_000_000);
  private sent = 0;
  /** First message of each round (secure aggregation starts before the task). */
  private readonly roundStarts = new Map<number, number>();
  private readonly secure: SiteSecureAggregation;

  constructor(
    private readonly url: string,
    readonly siteId: string,
    private readonly noise: number,
    maxMessageBytes: number,
    private readonly onTask?: (site: SimSite, task: TrainTask) => void,
  ) {
    this.signer = identitySigner(siteId, this.keys);
    this.socket = io(`${url}${SITE_NAMESPACE}`, {
      transports: ['websocket'],
      reconnection: false,
      // passed on to the `ws` client in Node
      ...({ maxPayload: maxMessageBytes } as object),
    });
    this.socket.io.on('open', () => {
      const engine = this.socket.io.engine;
      engine.on('packet', (p) => (this.received += packetBytes(p.data)));
      engine.on('packetCreate', (p) => (this.sent += packetBytes(p.data)));
    });
    this.secure = new SiteSecureAggregation(siteId, this.keys.sign.secretKey);
    for (const [event, answer] of this.secure.handlers()) {
      this.socket.on(event, (raw: { round?: number }, ack: (a: unknown) => void) => {
        if (event === SecAggEvents.advertise && typeof raw?.round === 'number' && !this.roundStarts.has(raw.round)) {
          this.roundStarts.set(raw.round, performance.now());
        }
        ack(answer(raw));
      });
    }
    this.socket.on(CoordinatorEvents.train, (task: TrainTask, ack: (a: Ack) => void) => {
      const now = performance.now();
      const trace: RoundTrace = { taskAt: now, startAt: this.roundStarts.get(task.config.round) ?? now, downloadBytes: this.received, parameters: 0 };
      this.received = 0;
      this.sent = 0;
      if (task.kind === 'round') this.rounds.set(task.config.round, trace);
      this.onTask?.(this, task);
      ack({ ok: true });
      void enqueue(() => this.answer(task, trace)).catch((e: unknown) => this.errors.push(`${task.kind} ${task.config.round}: ${(e as Error).message}`));
    });
  }

  async hello(trainSamples: number): Promise<void> {
    await new Promise<void>((ok, fail) => {
      if (this.socket.connected) return ok();
      this.socket.once('connect', () => ok());
      this.socket.once('connect_error', (e) => fail(e));
    });
    await requestEnrollment(this.url, enrollmentRequest(this.signer));
    const ack = await authenticate((event, payload) => this.socket.timeout(30_000).emitWithAck(event, payload), this.signer, {
      backend: 'none',
      software: 'bench-round',
      trainSamples,
      validationSamples: 0,
    });
    if (!ack.ok) throw new Error(`${this.siteId}: hello refused: ${ack.error}`);
    this.coordinatorKey = fromBase64(ack.coordinatorBoxPublicKey);
    this.chunkBytes = chunkBytesForLimit(ack.maxMessageBytes);
  }

  private async answer(task: TrainTask, trace: RoundTrace): Promise<void> {
    const bytes = await downloadInChunks((request) => this.socket.timeout(60_000).emitWithAck(ChunkEvents.fetchChunk, request), task.model);
    const global = decodeWeights(bytes, 'task weights');
    trace.parameters = parameterCount(global);
    const weights = global.map((t) => {
      const v = new Float32Array(t.values);
      for (let i = 0; i < v.length; i++) v[i] += (Math.random() - 0.5) * 2 * this.noise;
      return namedTensor(t.name, t.shape, v);
    });
    const header = {
      runId: task.config.runId,
      round: task.config.round,
      kind: task.kind,
      siteId: this.siteId,
      baseModelHash: task.modelHash,
      numSamples: 100,
      metrics: {},
    };
    const plaintext = task.secagg
      ? encodeMaskedUpdateEnvelope({ header, masked: this.secure.mask(task.config.runId, task.config.round, task.secagg, global, weights, 100) })
      : encodeUpdateEnvelope({ header, weights });
    const sealed = seal(plaintext, this.coordinatorKey!, this.keys.box.secretKey);
    const update = prepareUpdate(
      { runId: task.config.runId, round: task.config.round, kind: task.kind, siteId: this.siteId, nonce: toBase64(sealed.nonce) },
      sealed.ciphertext,
      this.signer,
    );
    const ack = (await deliverUpdate(
      (event, payload) => {
        if (event === SiteEvents.update) trace.sentAt = performance.now();
        return this.socket.timeout(event === SiteEvents.update ? 600_000 : 60_000).emitWithAck(event, payload);
      },
      update,
      this.chunkBytes,
    )) as Ack;
    trace.ackAt = performance.now();
    trace.uploadBytes = this.sent;
    // The model is fetched in chunks after the task arrived: those bytes count as download.
    trace.downloadBytes += this.received;
    this.received = 0;
    if (!ack.ok) throw new Error(`update refused: ${ack.error}`);
  }

  close(): void {
    this.socket.disconnect();
  }
}
