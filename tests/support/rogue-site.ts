import { io, Socket } from 'socket.io-client';
import { BoxKeyPair, fromBase64, generateBoxKeyPair, seal, toBase64 } from '@histofed/crypto';
import { namedTensor } from '@histofed/fl-core';
import { Ack, CoordinatorEvents, PROTOCOL_VERSION, SITE_NAMESPACE, SiteEvents, TrainTask, encodeUpdateEnvelope } from '@histofed/protocol';

/**
 * A misbehaving participant for end-to-end tests: enrolls like a site, then answers tasks with
 * malformed, mis-addressed and mis-shaped updates. Nothing here uses the real site client.
 */
export class RogueSite {
  readonly keys: BoxKeyPair = generateBoxKeyPair();
  readonly socket: Socket;
  coordinatorKey?: Uint8Array;
  readonly tasks: TrainTask[] = [];
  readonly replies: { what: string; ack: Ack }[] = [];

  constructor(
    url: string,
    readonly siteId: string,
    private readonly behaviour: (rogue: RogueSite, task: TrainTask) => Promise<void>,
  ) {
    this.socket = io(`${url}${SITE_NAMESPACE}`, { transports: ['websocket'], reconnection: false });
    this.socket.on(CoordinatorEvents.train, (task: TrainTask, ack: (a: Ack) => void) => {
      this.tasks.push(task);
      ack({ ok: true });
      void this.behaviour(this, task);
    });
  }

  async hello(trainSamples: number): Promise<Ack> {
    await new Promise<void>((ok) => (this.socket.connected ? ok() : this.socket.once('connect', () => ok())));
    const ack = await this.socket.timeout(10_000).emitWithAck(SiteEvents.hello, {
      protocolVersion: PROTOCOL_VERSION,
      siteId: this.siteId,
      boxPublicKey: toBase64(this.keys.publicKey),
      backend: 'none',
      software: 'rogue',
      trainSamples,
      validationSamples: 0,
    });
    if (ack.ok) this.coordinatorKey = fromBase64(ack.coordinatorBoxPublicKey);
    return ack;
  }

  async send(what: string, event: string, payload: unknown): Promise<Ack> {
    const ack = (await this.socket.timeout(30_000).emitWithAck(event, payload)) as Ack;
    this.replies.push({ what, ack });
    return ack;
  }

  /** A correctly sealed update whose weights have the wrong shape. */
  sealedWrongShape(task: TrainTask, round = task.config.round) {
    const plaintext = encodeUpdateEnvelope({
      header: {
        runId: task.config.runId,
        round,
        kind: task.kind,
        siteId: this.siteId,
        baseModelHash: task.modelHash,
        numSamples: 10,
        metrics: {},
      },
      weights: [namedTensor('conv1/kernel', [2, 2], [1, 2, 3, 4])],
    });
    const sealed = seal(plaintext, this.coordinatorKey!, this.keys.secretKey);
    return {
      runId: task.config.runId,
      round,
      kind: task.kind,
      siteId: this.siteId,
      nonce: toBase64(sealed.nonce),
      sealed: Buffer.from(sealed.ciphertext),
    };
  }

  close(): void {
    this.socket.disconnect();
  }
}
