import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import { IdentityKeys, fingerprint, fromBase64, identitySigner, loadOrCreateIdentityKeys, seal, toBase64 } from '@histofed/crypto';
import { LocalTensorPolicy, WeightSet, decodeWeights, isLocalTensor } from '@histofed/fl-core';
import { availableParallelism } from 'node:os';
import { TrainingPool, createTrainingPool, currentBackend } from '@histofed/ml';
import {
  Ack,
  CalibrationEvents,
  EnsembleFitEvents,
  ChunkEvents,
  FinalModelEvents,
  CoordinatorEvents,
  EmitWithAck,
  PreparedUpdate,
  ProgressEvents,
  ProgressThrottle,
  PruningEvents,
  SiteProgress,
  SITE_NAMESPACE,
  SecAggEvents,
  StainEvents,
  StainStatsAck,
  SiteEvents,
  SiteSigner,
  TrainTask,
  TransferError,
  authenticate,
  chunkBytesForLimit,
  deliverUpdate,
  downloadInChunks,
  encodeMaskedUpdateEnvelope,
  encodeUpdateEnvelope,
  enrollmentRequest,
  prepareUpdate,
  refusal,
  requestEnrollment,
  stainStatsRequestSchema,
  stainStatsSignedBytes,
  trainTaskSchema,
  validateMessage,
  validateSiteToCoordinatorAck,
} from '@histofed/protocol';
import { TaskProgress, runLocalTraining } from './local-training';
import { checkStartingEncoder, runLocalPretraining } from './site-pretraining';
import { SiteSecureAggregation } from '@histofed/secagg';
import { SiteCalibration } from './site-calibration';
import { SitePruning } from './site-pruning';
import { SiteFinalModels } from './site-final-models';
import { SiteSocket, coordinatorRequests } from './coordinator-channel';
import { LocalTensorStore } from './local-tensor-store';
import { Outbox } from './outbox';
import { PendingUpdates, SendOutcome } from './pending-updates';
import { REFUSED_RETRY_MS, helloRefusalPlan } from './refusal-plan';
import { SiteConfig } from './site-config';
import { SiteData } from './site-data';
import { labelStorePath } from './label-store';
import { SiteLogger } from './site-logger';

const HELLO_TIMEOUT_MS = 30_000;
const SEND_TIMEOUT_MS = 120_000;
/** Per chunk of a model download or update upload. */
const CHUNK_TIMEOUT_MS = 60_000;
/** A progress message's answer is not waited for beyond this (issue 17). */
const PROGRESS_TIMEOUT_MS = 10_000;
const SOFTWARE = 'histofed-site 0.1.0';
/** How often an idle site looks at its label store for labels imported while it runs (`label import`). */
const LABEL_CHECK_MS = 5_000;
/** After a secure-aggregation advertisement, labels wait this long for the round's task at most (its sample count is the round's weight scale). */
const SECURE_ROUND_HOLD_MS = 10 * 60_000;

/**
 * A hospital's participation: keeps a socket.io connection to the coordinator (reconnecting with
 * backoff), answers training tasks with sealed updates. Images and file names never leave: an
 * update holds the weights, the sample count and validation metrics, sealed to the coordinator.
 */
export class SiteClient {
  private socket: SiteSocket | undefined;
  private coordinatorKey: Uint8Array | undefined;
  /** Chunk size under the coordinator's message limit (from its hello answer). */
  private chunkBytes = chunkBytesForLimit(1_000_000);
  private busy = false;
  private helloRetry: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private labelTimer: NodeJS.Timeout | undefined;
  /** The label store's size and modification time when last read ('' before the first look). */
  private labelStamp = '';
  private checkingLabels = false;
  /** Boosted-ensemble members by SHA-256, for the rounds of one boosted member (at most BOOSTING_MAX_MEMBERS). */
  private readonly boostingCache = new Map<string, WeightSet>();
  /** When the last secure-aggregation round this site advertised keys for began, until its task ends. */
  private secureRoundSince: number | null = null;
  private readonly signer: SiteSigner;
  private readonly secure: SiteSecureAggregation;
  /** Updates that could not be delivered yet (connection lost while training); resent on reconnect. */
  private readonly pending = new PendingUpdates<PreparedUpdate>();
  private readonly localTensors: LocalTensorStore;
  /** Answers the federated calibration's questions after a run's last round (numbers only). */
  private readonly calibration: SiteCalibration;
  /** Answers the SE gate statistics of a federated channel-pruning step (issue 18; numbers only). */
  private readonly pruning: SitePruning;
  /** Pins the coordinator's signing key; receives the final models of finished runs (issue 15). */
  private readonly finalModels: SiteFinalModels;

  private constructor(
    private readonly config: SiteConfig,
    private readonly data: SiteData,
    private readonly keys: IdentityKeys,
    private readonly logger: SiteLogger,
    private readonly outbox: Outbox,
    /** Starts in the background: the site says hello without waiting for its workers (see create). */
    private readonly pool: Promise<TrainingPool | undefined>,
  ) {
    this.signer = identitySigner(config.siteId, keys);
    this.secure = new SiteSecureAggregation(config.siteId, keys.sign.secretKey);
    this.localTensors = new LocalTensorStore(config.stateDir);
    this.calibration = new SiteCalibration(config.siteId, data, this.signer, outbox, logger, (ref, what) =>
      downloadInChunks((request) => this.socket!.timeout(CHUNK_TIMEOUT_MS).emitWithAck(ChunkEvents.fetchChunk, request), ref, { what }),
    );
    this.pruning = new SitePruning(config.siteId, data, this.signer, outbox, logger, (ref, what) =>
      downloadInChunks((request) => this.socket!.timeout(CHUNK_TIMEOUT_MS).emitWithAck(ChunkEvents.fetchChunk, request), ref, { what }),
    );
    this.finalModels = new SiteFinalModels(config.stateDir, config.siteId, config.coordinatorUrl, outbox, logger, (ref, what, maxTotalBytes) =>
      downloadInChunks((request) => this.socket!.timeout(CHUNK_TIMEOUT_MS).emitWithAck(ChunkEvents.fetchChunk, request), ref, { what, maxTotalBytes }),
    );
  }

  static async create(config: SiteConfig, logger = new SiteLogger(config.siteId)): Promise<SiteClient> {
    const { keys, created } = await loadSiteKeys(config.stateDir);
    logger.event('info', created ? 'site keys created' : 'site keys loaded', {
      boxPublicKey: toBase64(keys.box.publicKey),
      signKeyFingerprint: fingerprint(keys.sign.publicKey),
    });
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
      labelledImages: data.split.labelled.length,
    });
    // Labels of the site's label store that cannot be used (the file moved or changed): named here, at the site only.
    for (const p of data.split.labelProblems) logger.event('warn', 'labelled image left out', p);
    // The workers take seconds to start (longer on a busy machine): the site connects meanwhile, so
    // that a restarted site is back before the coordinator's next round starts without it. A task
    // waits for the pool; a pool that cannot start fails the tasks (and is logged once).
    const pool = startTrainingPool(config, logger).then((p) => {
      // Tile features of a frozen backbone are extracted on the pool's workers too.
      data.pool = p;
      return p;
    });
    pool.catch((e: unknown) => logger.event('error', 'training worker pool did not start', { error: (e as Error).message }));
    return new SiteClient(config, data, keys, logger, new Outbox(config.stateDir, config.auditPlaintext), pool);
  }

  /**
   * Registers this site's public keys with the coordinator (idempotent: an enrolled site just gets
   * its status). Failure is logged, not fatal: the connection loop keeps trying.
   */
  async enroll(): Promise<void> {
    try {
      const r = await requestEnrollment(this.config.coordinatorUrl, enrollmentRequest(this.signer, this.config.enrollmentToken));
      this.logger.event('info', 'enrolled with coordinator', { status: r.status, signKeyFingerprint: r.signKeyFingerprint });
      if (!(await this.finalModels.checkCoordinatorKey(r.coordinatorSignPublicKey, 'enroll'))) this.distrustCoordinator();
    } catch (e) {
      this.logger.event('warn', 'enrollment failed', { error: (e as Error).message });
    }
  }

  /** Connects and keeps participating until stop(). */
  connect(): void {
    if (this.stopped) return;
    const socket: SiteSocket = io(`${this.config.coordinatorUrl}${SITE_NAMESPACE}`, {
      transports: ['websocket'],
      reconnection: true,
      reconnectionDelay: 1000,
      reconnectionDelayMax: 10_000,
      randomizationFactor: 0.5,
    });
    this.socket = socket;
    socket.on('connect', () => void this.hello());
    // Labels imported while the site runs are picked up between tasks (and the new count announced).
    void labelStoreStamp(this.config.stateDir).then((stamp) => (this.labelStamp ||= stamp));
    this.labelTimer = setInterval(() => void this.checkLabels(), LABEL_CHECK_MS);
    this.labelTimer.unref();
    socket.on('disconnect', (reason) => {
      clearTimeout(this.helloRetry);
      this.logger.event('warn', 'disconnected from coordinator', { reason });
      // socket.io does not reconnect by itself after the server closed the connection — which the
      // coordinator does to a connection that has not authenticated in time (e.g. while this site
      // awaits approval) or to a revoked site: ask again later.
      if (reason === 'io server disconnect' && !this.stopped) {
        this.reconnectTimer = setTimeout(() => {
          if (!this.stopped) socket.connect();
        }, REFUSED_RETRY_MS);
      }
    });
    socket.on('connect_error', (e) => this.logger.event('warn', 'cannot reach coordinator, retrying', { error: e.message }));
    socket.on(CoordinatorEvents.train, (task: unknown, ack) => {
      if (typeof ack !== 'function') return;
      ack(this.accept(task));
    });
    // Secure aggregation stages: answered in the ack (libs/secagg validates each request), logged with the outcome.
    const secagg = <A extends { ok: true } | { ok: false; error: string }>(event: string, reply: A): A => {
      this.logger.event(reply.ok ? 'info' : 'warn', `secure aggregation ${event}`, reply.ok ? {} : { error: reply.error });
      return reply;
    };
    socket.on(SecAggEvents.advertise, (raw: unknown, ack) => {
      if (typeof ack !== 'function') return;
      const reply = this.secure.advertise(raw);
      if (reply.ok) this.secureRoundSince = Date.now();
      ack(secagg(SecAggEvents.advertise, reply));
    });
    socket.on(SecAggEvents.shareKeys, (raw: unknown, ack) => {
      if (typeof ack === 'function') ack(secagg(SecAggEvents.shareKeys, this.secure.shareKeys(raw)));
    });
    socket.on(SecAggEvents.unmask, (raw: unknown, ack) => {
      if (typeof ack === 'function') ack(secagg(SecAggEvents.unmask, this.secure.unmask(raw)));
    });
    socket.on(StainEvents.stats, (raw: unknown, ack) => {
      if (typeof ack === 'function') void this.stainStats(raw).then(ack);
    });
    // Issue 18: the SE gate statistics of the global model on the site's training images (numbers only).
    socket.on(PruningEvents.channelStats, (raw: unknown, ack) => {
      if (typeof ack === 'function') void this.pruning.answer(raw).then(ack);
    });
    socket.on(CalibrationEvents.nll, (raw: unknown, ack) => {
      if (typeof ack === 'function') void this.calibration.answerNll(raw).then(ack);
    });
    socket.on(CalibrationEvents.review, (raw: unknown, ack) => {
      if (typeof ack === 'function') void this.calibration.answerReview(raw).then(ack);
    });
    // Issue 16: the ensemble's weighted mean, fitted with the sites (numbers only).
    socket.on(EnsembleFitEvents.nll, (raw: unknown, ack) => {
      if (typeof ack === 'function') void this.calibration.answerWeights(raw).then(ack);
    });
    // Issue 16: the ensemble's stacking meta-learner, fitted with the sites (gradient sums, numbers only).
    socket.on(EnsembleFitEvents.stacking, (raw: unknown, ack) => {
      if (typeof ack === 'function') void this.calibration.answerStacking(raw).then(ack);
    });
    socket.on(FinalModelEvents.offer, (raw: unknown, ack) => {
      if (typeof ack === 'function') void this.finalModels.receive(raw).then(ack);
    });
  }

  /** The coordinator presented another signing key than the pinned one (logged): stop taking part. */
  private distrustCoordinator(): void {
    process.exitCode = 1;
    void this.stop();
  }

  /** A federated stain target: this site's stain statistics (numbers only), signed, recorded in the outbox. */
  private async stainStats(raw: unknown): Promise<StainStatsAck> {
    const v = validateMessage(stainStatsRequestSchema, raw, StainEvents.stats);
    if (!v.ok) return refusal(v.reason, 'invalid-message');
    try {
      const { images, stats } = await this.data.stainStatistics(v.value.method);
      const signature = toBase64(this.signer.sign(stainStatsSignedBytes(v.value.runId, this.config.siteId, images, stats)));
      const answer = { ok: true as const, siteId: this.config.siteId, images, stats, signature };
      await this.outbox.record(StainEvents.stats, { runId: v.value.runId, ...answer });
      this.logger.event('info', 'stain statistics sent', { runId: v.value.runId, method: stats.method, images });
      return answer;
    } catch (e) {
      this.logger.event('warn', 'stain statistics failed', { runId: v.value.runId, error: (e as Error).message });
      return refusal(`stain statistics of site ${this.config.siteId}: ${(e as Error).message}`, 'internal-error');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.labelTimer);
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.helloRetry);
    this.socket?.disconnect();
    await (await this.pool.catch(() => undefined))?.close();
  }

  /** Authenticates the connection (signed challenge); while refused (e.g. awaiting approval), retries. */
  private async hello(): Promise<void> {
    clearTimeout(this.helloRetry);
    const socket = this.socket!;
    const fields = {
      backend: currentBackend()?.name ?? 'none',
      software: SOFTWARE,
      trainSamples: this.data.trainCount,
      validationSamples: this.data.split.validation.length,
      // Active learning: how many images the site's pathologists labelled (a count; sent only when there are any).
      ...(this.data.split.labelled.length > 0 ? { labelledImages: this.data.split.labelled.length } : {}),
    };
    try {
      // Every message of the handshake is recorded in the outbox exactly as sent.
      const send = coordinatorRequests(socket, () => HELLO_TIMEOUT_MS);
      const emit: EmitWithAck = async (event, payload) => {
        await this.outbox.record(event, payload);
        return send(event, payload);
      };
      const ack = await authenticate(emit, this.signer, fields);
      if (!ack.ok) {
        // The code says what to do; the text is for the log.
        const plan = helloRefusalPlan(ack);
        this.logger.event(plan.level, 'coordinator refused this site; asking again', {
          error: ack.error,
          code: ack.code ?? null,
          next: plan.hint,
          retryInSeconds: plan.retryMs / 1000,
        });
        if (plan.enroll) await this.enroll();
        if (socket.connected) this.helloRetry = setTimeout(() => void this.hello(), plan.retryMs);
        return;
      }
      // A site enrolled before coordinator keys were pinned pins it here; another key than the pinned one ends participation.
      if (!(await this.finalModels.checkCoordinatorKey(ack.coordinatorSignPublicKey, 'hello'))) return this.distrustCoordinator();
      this.coordinatorKey = fromBase64(ack.coordinatorBoxPublicKey);
      this.chunkBytes = chunkBytesForLimit(ack.maxMessageBytes);
      this.logger.event('info', 'connected to coordinator', {
        url: this.config.coordinatorUrl,
        coordinatorBoxPublicKey: ack.coordinatorBoxPublicKey,
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
      return refusal(v.reason, 'invalid-message');
    }
    if (this.busy) return refusal(`site ${this.config.siteId} is busy with another task`, 'busy');
    this.busy = true;
    const secure = v.value.secagg !== undefined;
    void this.perform(v.value).finally(() => {
      this.busy = false;
      if (secure) this.secureRoundSince = null;
    });
    return { ok: true };
  }

  /**
   * A 'boost' task's ensemble members (the run's global model and the boosted members before this
   * one), fetched in chunks like the round's model, SHA-256 checked; kept between the member's rounds.
   */
  private async boostingMembers(task: TrainTask): Promise<WeightSet[]> {
    const refs = task.boosting?.members ?? [];
    for (const sha of [...this.boostingCache.keys()]) if (!refs.some((r) => r.sha256 === sha)) this.boostingCache.delete(sha);
    const out: WeightSet[] = [];
    for (const [i, ref] of refs.entries()) {
      let weights = this.boostingCache.get(ref.sha256);
      if (!weights) {
        const what = `boosting member ${i + 1} ${ref.sha256.slice(0, 12)} (run ${task.config.runId})`;
        weights = decodeWeights(await downloadInChunks((request) => this.socket!.timeout(CHUNK_TIMEOUT_MS).emitWithAck(ChunkEvents.fetchChunk, request), ref, { what }), what);
        this.boostingCache.set(ref.sha256, weights);
      }
      out.push(weights);
    }
    return out;
  }

  /**
   * Active learning: labels imported (`histofed-site label import`) while the site runs. When the
   * label store changed and the site is idle — no task, not inside a secure-aggregation round whose
   * weight scale used the announced sample count — the site trains on the new labels from its next
   * task and says hello again with the new counts (the coordinator logs "site labelled N new images").
   */
  private async checkLabels(): Promise<void> {
    if (this.stopped || this.busy || this.checkingLabels) return;
    if (this.secureRoundSince !== null) {
      if (Date.now() - this.secureRoundSince < SECURE_ROUND_HOLD_MS) return;
      // The round's task never came (the site was dropped after the advertisement): no longer wait for it.
      this.secureRoundSince = null;
    }
    this.checkingLabels = true;
    try {
      const stamp = await labelStoreStamp(this.config.stateDir);
      if (stamp === this.labelStamp) return;
      const { labels, changed } = await this.data.readLabels(this.config.stateDir);
      // A task or a secure round began while the store was read: look again when it is over.
      if (this.busy || this.secureRoundSince !== null) return;
      this.labelStamp = stamp;
      if (!changed) return;
      const before = this.data.split.labelled.length;
      this.data.useLabels(labels);
      this.logger.event('info', 'labels reloaded', {
        labelledImages: labels.usable.length,
        newImages: labels.usable.length - before,
        trainImages: this.data.trainCount,
      });
      for (const p of labels.problems) this.logger.event('warn', 'labelled image left out', p);
      if (this.socket?.connected && this.coordinatorKey) await this.hello();
    } catch (e) {
      this.logger.event('warn', 'reading the label store failed', { error: (e as Error).message });
    } finally {
      this.checkingLabels = false;
    }
  }

  private async perform(task: TrainTask): Promise<void> {
    const cfg = task.config;
    const progress = this.progressReporter(task);
    try {
      progress('downloading');
      const global = decodeWeights(
        await downloadInChunks((request) => this.socket!.timeout(CHUNK_TIMEOUT_MS).emitWithAck(ChunkEvents.fetchChunk, request), task.model, {
          what: `global model ${task.modelHash.slice(0, 12)} (run ${cfg.runId} round ${cfg.round})`,
        }),
        'global model',
      );
      // Issue 19: a run that starts from a pretrained encoder — its first round's model must hold exactly that encoder.
      const encoder = checkStartingEncoder(task, global);
      if (encoder.checked) this.logger.event('info', 'pretrained encoder checked', { runId: cfg.runId, pretrainRun: cfg.startFrom?.run, sha256: encoder.sha256 });
      // FedBN: the site's own local tensors (from its previous task in this run) replace the global ones.
      const start = this.localTensors.startingPoint(cfg.runId, global, cfg.localTensors);
      if (start.own) this.logger.event('info', 'training from own local tensors', { runId: cfg.runId, round: cfg.round, policy: cfg.localTensors });
      const boosting = task.boosting ? await this.boostingMembers(task) : undefined;
      // Issue 19: a pretrain run's round trains the contrastive objective on every image of the site.
      const result = cfg.pretrain
        ? await runLocalPretraining(task, start.weights, this.data, this.logger, progress)
        : await runLocalTraining(task, start.weights, this.data, this.logger, await this.pool, progress, boosting);
      if (cfg.localTensors !== 'none') this.localTensors.save(cfg.runId, result.weights, cfg.localTensors);
      const header = {
        runId: cfg.runId,
        round: cfg.round,
        kind: task.kind,
        siteId: this.config.siteId,
        baseModelHash: task.modelHash,
        numSamples: result.numSamples,
        metrics: result.metrics,
        ...(result.featureMoments ? { featureMoments: result.featureMoments } : {}),
      };
      const plaintext = task.secagg
        ? encodeMaskedUpdateEnvelope({
            header,
            // With local tensors (FedBN) only the shared ones are masked: the site's own never leave it.
            masked: this.secure.mask(cfg.runId, cfg.round, task.secagg, sharedTensors(global, cfg.localTensors), sharedTensors(result.weights, cfg.localTensors), result.numSamples),
          })
        : encodeUpdateEnvelope({ header, weights: result.weights });
      const sealed = seal(plaintext, this.coordinatorKey!, this.keys.box.secretKey);
      const update = prepareUpdate(
        { runId: cfg.runId, round: cfg.round, kind: task.kind, siteId: this.config.siteId, nonce: toBase64(sealed.nonce) },
        sealed.ciphertext,
        this.signer,
      );
      await this.outbox.record(SiteEvents.update, { ...update.message, sealed: update.sealed }, plaintext);
      progress('uploading');
      await this.send(update);
    } catch (e) {
      const reason = (e as Error).message;
      this.logger.event('error', 'task failed', { runId: cfg.runId, round: cfg.round, kind: task.kind, reason });
      const failure = { runId: cfg.runId, round: cfg.round, kind: task.kind, reason };
      await this.outbox.record(SiteEvents.taskFailed, failure);
      this.socket?.timeout(SEND_TIMEOUT_MS).emit(SiteEvents.taskFailed, failure, () => undefined);
    }
  }

  /**
   * Issue 17: the task's stage and training progress for the administrator's dashboard (counts and
   * a batch loss; recorded in the outbox like every message), at most SITE_PROGRESS_MAX_PER_SECOND,
   * without waiting for the answer: a lost progress message costs nothing.
   */
  private progressReporter(task: TrainTask): TaskProgress {
    const throttle = new ProgressThrottle();
    return (stage, training) => {
      if (!this.socket?.connected || !throttle.offer(stage)) return;
      const loss = training && Number.isFinite(training.loss) && training.loss >= 0 && training.loss <= 1e6 ? { loss: training.loss } : {};
      const message: SiteProgress = {
        runId: task.config.runId,
        round: task.config.round,
        kind: task.kind,
        stage,
        ...(training ? { epoch: training.epoch, epochs: training.epochs, batch: training.batch, batches: training.batches, ...loss } : {}),
      };
      const send = coordinatorRequests(this.socket, () => PROGRESS_TIMEOUT_MS);
      void this.outbox
        .record(ProgressEvents.progress, message)
        .then(() => send(ProgressEvents.progress, message))
        .catch(() => undefined);
    };
  }

  /** Uploads the ciphertext in chunks, then names it in site:update; queued for reconnection on failure. */
  private async send(update: PreparedUpdate): Promise<void> {
    if (!this.socket?.connected) {
      this.logger.event('warn', 'not connected; update queued until reconnection', { round: update.message.round });
      this.pending.add(update);
      return;
    }
    if ((await this.deliver(update)) === 'retry') this.pending.add(update);
  }

  /** One attempt: 'retry' when it got no answer (worth sending after the next reconnection). */
  private async deliver(update: PreparedUpdate): Promise<SendOutcome> {
    const { round, runId, kind } = update.message;
    if (!this.socket?.connected) return 'retry';
    try {
      const send = coordinatorRequests(this.socket, (event) => (event === SiteEvents.update ? SEND_TIMEOUT_MS : CHUNK_TIMEOUT_MS));
      const raw = await deliverUpdate(send, update, this.chunkBytes);
      const ack = validateSiteToCoordinatorAck(SiteEvents.update, raw, 'update ack');
      if (!ack.ok) throw new Error(ack.reason);
      if (ack.value.ok) this.logger.event('info', 'update accepted', { runId, round, kind, bytes: update.sealed.length });
      else this.logger.event('warn', 'update rejected by coordinator', { round, error: ack.value.error, code: ack.value.code ?? null });
      return 'done';
    } catch (e) {
      if (e instanceof TransferError && e.refused) {
        // The coordinator answered "no" (e.g. no round awaits this upload any more): sending it again would not change that.
        this.logger.event('warn', 'update refused by coordinator; dropped', { runId, round, kind, error: e.message });
        return 'done';
      }
      this.logger.event('warn', 'update not delivered; queued for reconnection', { round, error: (e as Error).message });
      return 'retry';
    }
  }

  private async flushPending(): Promise<void> {
    await this.pending.flush(() => this.socket?.connected === true, (update) => this.deliver(update));
  }
}

/** The tensors of `weights` that are aggregated (all of them unless the run keeps some local). */
function sharedTensors(weights: WeightSet, policy: LocalTensorPolicy): WeightSet {
  return policy === 'none' ? weights : weights.filter((t) => !isLocalTensor(t.name, policy));
}

/** The label store's size and modification time ('none' when there is none): a cheap change check. */
async function labelStoreStamp(stateDir: string): Promise<string> {
  try {
    const s = await stat(labelStorePath(stateDir));
    return `${s.size}:${s.mtimeMs}`;
  } catch {
    return 'none';
  }
}

/** The site's key file: Ed25519 (identity, signatures) and X25519 (sealing updates), mode 0600. */
export function loadSiteKeys(stateDir: string) {
  return loadOrCreateIdentityKeys(join(stateDir, 'site-keys.json'));
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
  const pool = await createTrainingPool({ workers, backend: backend as 'wasm' | 'cpu' | 'tensorflow' | 'tensorflow-gpu', backboneDir: config.backboneDir });
  logger.event('info', 'training worker pool started', { backend: pool.backend?.name, workers });
  return pool;
}
