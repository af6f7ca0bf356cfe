import { join } from 'node:path';
import { io, Socket } from 'socket.io-client';
import { fromBase64, loadOrCreateBoxKeyPair, seal, toBase64, BoxKeyPair } from '@histofed/crypto';
import { availableParallelism } from 'node:os';
import { TrainingPool, createTrainingPool, currentBackend } from '@histofed/ml';
import {
  Ack,
  CoordinatorEvents,
  CoordinatorToSiteEvents,
  PROTOCOL_VERSION,
  SITE_NAMESPACE,
  SealedUpdate,
  SiteEvents,
  SiteHello,
  SiteToCoordinatorEvents,
  TrainTask,
  ackSchema,
  encodeUpdateEnvelope,
  helloAckSchema,
  trainTaskSchema,
  validateMessage,
} from '@histofed/protocol';
import { runLocalTraining } from './local-training';
import { Outbox } from './outbox';
import { SiteConfig } from './site-config';
import { SiteData } from './site-data';
import { SiteLogger } from './site-logger';

const HELLO_TIMEOUT_MS = 30_000;
const SEND_TIMEOUT_MS = 120_000;
const SOFTWARE = 'histofed-site 0.1.0';

type SiteSocket = Socket<CoordinatorToSiteEvents, SiteToCoordinatorEvents>;

/**
 * A hospital's participation: keeps a socket.io connection to the coordinator (reconnecting with
 * backoff), answers training tasks with sealed updates. Images and file names never leave: an
 * update holds the weights, the sample count and validation metrics, sealed to the coordinator.
 */
export class SiteClient {
  private socket: SiteSocket | undefined;
  private coordinatorKey: Uint8Array | undefined;
  private busy = false;
  /** Updates that could not be delivered yet (connection lost while training); resent on reconnect. */
  private readonly pending: SealedUpdate[] = [];

  private constructor(
    private readonly config: SiteConfig,
    private readonly data: SiteData,
    private readonly keys: BoxKeyPair,
    private readonly logger: SiteLogger,
    private readonly outbox: Outbox,
    private readonly pool: TrainingPool | undefined,
  ) {}

  static async create(config: SiteConfig, logger = new SiteLogger(config.siteId)): Promise<SiteClient> {
    const { keys, created } = await loadOrCreateBoxKeyPair(join(config.stateDir, 'site-keys.json'));
    logger.event('info', created ? 'site key pair created' : 'site key pair loaded', { boxPublicKey: toBase64(keys.publicKey) });
    const data = await SiteData.open(config);
    logger.event('info', 'local data ready', {
      dataDir: config.dataDir,
      simulate: config.simulate ?? null,
      simulation: data.simulation,
      imageCache: config.cacheDir,
      trainImages: data.split.train.length,
      validationImages: data.split.validation.length,
      trainPatients: new Set(data.split.train.map((i) => i.patientId)).size,
      validationPatients: new Set(data.split.validation.map((i) => i.patientId)).size,
      problems: data.split.problems,
    });
    const pool = await startTrainingPool(config, logger);
    return new SiteClient(config, data, keys, logger, new Outbox(config.stateDir, config.auditPlaintext), pool);
  }

  /** Connects and keeps participating until stop(). */
  connect(): void {
    const socket: SiteSocket = io(`${this.config.coordinatorUrl}${SITE_NAMESPACE}`, {
      transports: ['websocket'],
      reconnection: true,
      reconnectionDelay: 1000,
      reconnectionDelayMax: 30_000,
      randomizationFactor: 0.5,
    });
    this.socket = socket;
    socket.on('connect', () => void this.hello());
    socket.on('disconnect', (reason) => this.logger.event('warn', 'disconnected from coordinator', { reason }));
    socket.on('connect_error', (e) => this.logger.event('warn', 'cannot reach coordinator, retrying', { error: e.message }));
    socket.on(CoordinatorEvents.train, (task: unknown, ack: (a: Ack) => void) => {
      if (typeof ack !== 'function') return;
      ack(this.accept(task));
    });
  }

  async stop(): Promise<void> {
    this.socket?.disconnect();
    await this.pool?.close();
  }

  private async hello(): Promise<void> {
    const hello: SiteHello = {
      protocolVersion: PROTOCOL_VERSION,
      siteId: this.config.siteId,
      boxPublicKey: toBase64(this.keys.publicKey),
      backend: currentBackend()?.name ?? 'none',
      software: SOFTWARE,
      trainSamples: this.data.split.train.length,
      validationSamples: this.data.split.validation.length,
    };
    try {
      await this.outbox.record(SiteEvents.hello, { ...hello });
      const raw = await this.socket!.timeout(HELLO_TIMEOUT_MS).emitWithAck(SiteEvents.hello, hello);
      const ack = validateMessage(helloAckSchema, raw, 'hello ack');
      if (!ack.ok) throw new Error(ack.reason);
      if (!ack.value.ok) {
        this.logger.event('error', 'coordinator refused this site', { error: ack.value.error });
        return;
      }
      this.coordinatorKey = fromBase64(ack.value.coordinatorBoxPublicKey);
      this.logger.event('info', 'connected to coordinator', {
        url: this.config.coordinatorUrl,
        coordinatorBoxPublicKey: ack.value.coordinatorBoxPublicKey,
      });
      await this.flushPending();
    } catch (e) {
      this.logger.event('warn', 'hello failed, will retry on reconnect', { error: (e as Error).message });
    }
  }

  /** Validates a task and starts it in the background; the ack says whether it was accepted. */
  private accept(raw: unknown): Ack {
    const v = validateMessage(trainTaskSchema, raw, CoordinatorEvents.train);
    if (!v.ok) {
      this.logger.event('warn', 'task rejected', { reason: v.reason });
      return { ok: false, error: v.reason };
    }
    if (this.busy) return { ok: false, error: `site ${this.config.siteId} is busy with another task` };
    this.busy = true;
    void this.perform(v.value).finally(() => (this.busy = false));
    return { ok: true };
  }

  private async perform(task: TrainTask): Promise<void> {
    const cfg = task.config;
    try {
      const result = await runLocalTraining(task, this.data, this.logger, this.pool);
      const plaintext = encodeUpdateEnvelope({
        header: {
          runId: cfg.runId,
          round: cfg.round,
          kind: task.kind,
          siteId: this.config.siteId,
          baseModelHash: task.modelHash,
          numSamples: result.numSamples,
          metrics: result.metrics,
        },
        weights: result.weights,
      });
      const sealed = seal(plaintext, this.coordinatorKey!, this.keys.secretKey);
      const update: SealedUpdate = {
        runId: cfg.runId,
        round: cfg.round,
        kind: task.kind,
        siteId: this.config.siteId,
        nonce: toBase64(sealed.nonce),
        sealed: sealed.ciphertext,
      };
      await this.outbox.record(SiteEvents.update, { ...update }, plaintext);
      await this.send(update);
    } catch (e) {
      const reason = (e as Error).message;
      this.logger.event('error', 'task failed', { runId: cfg.runId, round: cfg.round, kind: task.kind, reason });
      const failure = { runId: cfg.runId, round: cfg.round, kind: task.kind, reason };
      await this.outbox.record(SiteEvents.taskFailed, failure);
      this.socket?.timeout(SEND_TIMEOUT_MS).emit(SiteEvents.taskFailed, failure, () => undefined);
    }
  }

  private async send(update: SealedUpdate): Promise<void> {
    if (!this.socket?.connected) {
      this.logger.event('warn', 'not connected; update queued until reconnection', { round: update.round });
      this.pending.push(update);
      return;
    }
    try {
      const raw = await this.socket.timeout(SEND_TIMEOUT_MS).emitWithAck(SiteEvents.update, update);
      const ack = validateMessage(ackSchema, raw, 'update ack');
      if (!ack.ok) throw new Error(ack.reason);
      if (ack.value.ok) this.logger.event('info', 'update accepted', { runId: update.runId, round: update.round, kind: update.kind });
      else this.logger.event('warn', 'update rejected by coordinator', { round: update.round, error: ack.value.error });
    } catch (e) {
      this.logger.event('warn', 'update not acknowledged; queued for reconnection', { round: update.round, error: (e as Error).message });
      this.pending.push(update);
    }
  }

  private async flushPending(): Promise<void> {
    while (this.pending.length > 0 && this.socket?.connected) {
      await this.send(this.pending.shift()!);
    }
  }
}

/**
 * The wasm and cpu backends compute on one thread per process: with 'auto', one training worker
 * per core (data-parallel); native TensorFlow backends use every core by themselves.
 */
async function startTrainingPool(config: SiteConfig, logger: SiteLogger): Promise<TrainingPool | undefined> {
  const backend = currentBackend()?.name;
  const workers =
    config.trainWorkers === 'auto' ? (backend === 'wasm' || backend === 'cpu' ? availableParallelism() : 1) : config.trainWorkers;
  if (workers <= 1) {
    logger.event('info', 'training on the main thread', { backend, workers: 1 });
    return undefined;
  }
  const pool = await createTrainingPool({ workers, backend: backend as 'wasm' | 'cpu' | 'tensorflow' | 'tensorflow-gpu' });
  logger.event('info', 'training worker pool started', { backend: pool.backend?.name, workers });
  return pool;
}
