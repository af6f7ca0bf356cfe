import { io, Socket } from 'socket.io-client';
import {
  IdentityKeys,
  fromBase64,
  generateBoxKeyPair,
  generateSigningKeyPair,
  identitySigner,
  seal,
  toBase64,
} from '@histofed/crypto';
import { WeightSet, decodeWeights, namedTensor } from '@histofed/fl-core';
import {
  Ack,
  CalibrationEvents,
  ChunkEvents,
  EnsembleFitEvents,
  CoordinatorEvents,
  EnrollmentResponse,
  HelloAck,
  PreparedUpdate,
  SITE_NAMESPACE,
  SealedUpdate,
  SiteEvents,
  SiteSigner,
  TrainTask,
  authenticate,
  encodeMaskedUpdateEnvelope,
  encodeUpdateEnvelope,
  enrollmentRequest,
  downloadInChunks,
  prepareUpdate,
  requestEnrollment,
  uploadInChunks,
} from '@histofed/protocol';

/**
 * A protocol-speaking participant for end-to-end tests and benchmarks (misbehaving when asked):
 * enrolls and authenticates like a site (its own keys), fetches each task's model, then does
 * whatever `behaviour` says: honest, malformed, mis-addressed, mis-shaped, forged or replayed
 * updates. Nothing here uses the real site client.
 */
export class RogueSite {
  readonly signer: SiteSigner;
  readonly socket: Socket;
  coordinatorKey?: Uint8Array;
  readonly tasks: TrainTask[] = [];
  /** Global models fetched for the tasks, by hash. */
  readonly globals = new Map<string, WeightSet>();
  readonly replies: { what: string; ack: Ack }[] = [];

  constructor(
    private readonly url: string,
    readonly siteId: string,
    private readonly behaviour: (rogue: RogueSite, task: TrainTask) => Promise<void>,
    readonly keys: IdentityKeys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() },
  ) {
    this.signer = identitySigner(siteId, this.keys);
    this.socket = io(`${url}${SITE_NAMESPACE}`, { transports: ['websocket'], reconnection: false });
    this.socket.on(CoordinatorEvents.train, (task: TrainTask, ack: (a: Ack) => void) => {
      this.tasks.push(task);
      ack({ ok: true });
      void this.fetchModel(task).then(() => this.behaviour(this, task));
    });
    // A rogue holds no validation images: it declines the federated calibration's and the ensemble
    // weighting's questions at once (rather than letting the coordinator wait for its timeout).
    for (const event of [CalibrationEvents.nll, CalibrationEvents.review, EnsembleFitEvents.nll]) {
      this.socket.on(event, (_: unknown, ack: (a: Ack) => void) => ack({ ok: false, error: `rogue site ${siteId} has no validation images` }));
    }
  }

  enroll(): Promise<EnrollmentResponse> {
    return requestEnrollment(this.url, enrollmentRequest(this.signer));
  }

  /**
   * Challenge + signed hello, with this rogue's signer unless another is given (impersonation);
   * `labelledImages`: the active-learning count it announces (none by default).
   */
  async hello(trainSamples: number, signer: SiteSigner = this.signer, labelledImages?: number): Promise<HelloAck> {
    await new Promise<void>((ok) => (this.socket.connected ? ok() : this.socket.once('connect', () => ok())));
    const ack = await authenticate((event, payload) => this.socket.timeout(10_000).emitWithAck(event, payload), signer, {
      backend: 'none',
      software: 'rogue',
      trainSamples,
      validationSamples: 0,
      ...(labelledImages !== undefined ? { labelledImages } : {}),
    });
    if (ack.ok) this.coordinatorKey = fromBase64(ack.coordinatorBoxPublicKey);
    return ack;
  }

  private async fetchModel(task: TrainTask): Promise<void> {
    const bytes = await downloadInChunks((request) => this.socket.timeout(30_000).emitWithAck(ChunkEvents.fetchChunk, request), task.model);
    this.globals.set(task.modelHash, decodeWeights(bytes, 'task model'));
  }

  /** Uploads the update's ciphertext, then sends its message (with `override` applied) naming the upload. */
  async deliver(what: string, prepared: PreparedUpdate, override: Partial<Record<keyof SealedUpdate, unknown>> = {}): Promise<Ack> {
    const upload = await uploadInChunks((event, chunk) => this.socket.timeout(30_000).emitWithAck(event, chunk), prepared.sealed);
    return this.send(what, SiteEvents.update, { ...prepared.message, uploadId: upload.uploadId, ...override });
  }

  async send(what: string, event: string, payload: unknown): Promise<Ack> {
    const ack = (await this.socket.timeout(30_000).emitWithAck(event, payload)) as Ack;
    this.replies.push({ what, ack });
    return ack;
  }

  /** A sealed, signed update of `weights` (by default the task's own global weights: acceptable), or of a masked input. */
  update(
    task: TrainTask,
    opts: { round?: number; weights?: WeightSet; masked?: Uint8Array; numSamples?: number; signer?: SiteSigner } = {},
  ): PreparedUpdate {
    const round = opts.round ?? task.config.round;
    const header = {
      runId: task.config.runId,
      round,
      kind: task.kind,
      siteId: this.siteId,
      baseModelHash: task.modelHash,
      numSamples: opts.numSamples ?? 10,
      metrics: {},
    };
    const plaintext = opts.masked
      ? encodeMaskedUpdateEnvelope({ header, masked: opts.masked })
      : encodeUpdateEnvelope({ header, weights: opts.weights ?? this.globals.get(task.modelHash)! });
    const sealed = seal(plaintext, this.coordinatorKey!, this.keys.box.secretKey);
    return prepareUpdate(
      { runId: task.config.runId, round, kind: task.kind, siteId: this.siteId, nonce: toBase64(sealed.nonce) },
      sealed.ciphertext,
      opts.signer ?? this.signer,
    );
  }

  /** A correctly sealed and signed update whose weights have the wrong shape. */
  sealedWrongShape(task: TrainTask, round = task.config.round): PreparedUpdate {
    return this.update(task, { round, weights: [namedTensor('conv1/kernel', [2, 2], [1, 2, 3, 4])] });
  }

  /** A signer holding another key than the enrolled one (a forger who knows the site's id). */
  static impostor(siteId: string): SiteSigner {
    return identitySigner(siteId, { box: generateBoxKeyPair(), sign: generateSigningKeyPair() });
  }

  close(): void {
    this.socket.disconnect();
  }
}
