/**
 * Data-parallel local training on several cores: a pool of worker_threads, synchronous SGD.
 *
 * The wasm backend computes on one thread per process, so `trainLocal` uses one core. The pool
 * runs one replica of the model per worker thread (each with its own wasm instance and its own
 * Adam optimizer). Every step, the mini-batch — the same per-epoch shuffle as `trainLocal` for the
 * same seed — is split into contiguous shards, one per worker; each worker computes the gradients
 * of its shard's cross-entropy scaled by shard size / batch size, the main thread sums them (in
 * worker order) and sends the sum back, and every worker applies the same update, adding the
 * FedProx gradient mu * (w - w_global) itself. The replicas therefore stay identical, and the
 * result equals `trainLocal`'s up to floating-point summation order — except with dropout (each
 * worker draws its own masks) and with batch normalisation, which normalises each shard with the
 * shard's statistics (no synchronised batch norm). The batch-norm moving statistics, which each
 * replica updates from its own shards, are averaged over the workers at the end of every epoch.
 *
 * The images are shared with the workers once per `train` call through a SharedArrayBuffer
 * (without a copy when they already live in one, see `shareImages`); gradients travel as
 * transferred Float32Arrays. The next batch's gradient requests follow each update without waiting
 * for its acknowledgement (a worker handles its messages in order, so it computes them on the
 * updated weights): one round trip and one barrier per step instead of two, which counts on a
 * shared machine, where each hop waits for threads to be scheduled (MobileNetV2 fine-tuning step,
 * batch 32, 2 workers, load 7-8 on 2 cores, the two protocols alternating in one process: 123.8 ->
 * 114.4 and 130.5 -> 124.2 ms per step, medians of 8). The main thread only sums gradients, so its
 * event loop stays free (socket.io heartbeats). Worker threads are unref'd while the pool is idle,
 * so an idle pool never keeps the process alive; `close()` terminates them.
 */
import { availableParallelism } from 'node:os';
import { extname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { TransferListItem } from 'node:worker_threads';
import type { MemoryInfo } from '@tensorflow/tfjs-core';
import type { BackboneSpec, LabeledImages, ModelSpec, NamedTensor, WeightSet } from '@histofed/fl-core';
import { HistoFedError, ValidationError, isTwoStage } from '@histofed/fl-core';
import type { BackendChoice, SelectedBackend } from './backend';
import { currentBackend, parseBackendChoice } from './backend';
import { checkFinite, checkLabeledImages, checkSubtypeParents, dataRowShape } from './batches';
import { featureInputShape, validateModelSpec } from './models';
import { mixSeed, shuffledIndices } from './random';
import { checkTrainOptions } from './train';
import type { TrainOptions, TrainResult } from './train';
import type { FromWorker, ToWorker, TrainingWorkerData } from './training-messages';

export interface TrainingPoolOptions {
  /** Worker threads (default: the number of cores, `os.availableParallelism()`). */
  readonly workers?: number;
  /** Backend of the workers (default: the main thread's current backend, else 'auto'). */
  readonly backend?: BackendChoice;
  /** A 'layers-model' backbone's directory, for fine-tuning specs (the built-in MobileNetV2 needs none). */
  readonly backboneDir?: string;
}

export interface ParallelTrainResult extends TrainResult {
  /** The trained weights (full layout: trainable, then the averaged batch-norm statistics). */
  readonly weights: NamedTensor[];
}

/** A training worker failed (threw, or its thread exited); `worker` is its 0-based index. */
export class TrainingWorkerError extends HistoFedError {
  constructor(
    readonly worker: number,
    code: string,
    message: string,
  ) {
    super(code, message);
  }
}

/**
 * Returns `data` with its images in a SharedArrayBuffer (copied once), or `data` itself when they
 * already are. Pass the result to every `train` call of a site's rounds to avoid a copy per call.
 */
export function shareImages(data: LabeledImages): LabeledImages {
  if (data.images.buffer instanceof SharedArrayBuffer) return data;
  const images = new Float32Array(new SharedArrayBuffer(data.images.byteLength));
  images.set(data.images);
  return { ...data, images };
}

type Reply = Exclude<FromWorker, { type: 'ready' } | { type: 'error' }>;
type ReplyOf<T extends Reply['type']> = Extract<Reply, { type: T }>;
type Request = ToWorker extends infer M ? (M extends { id: number } ? Omit<M, 'id'> : never) : never;

interface Pending {
  resolve(r: Reply): void;
  reject(e: Error): void;
}

let nextId = 1;

/**
 * Where the worker module is and how to load it: compiled .js, or .ts through the process's own
 * TypeScript loader (HISTOFED_TS_REGISTER, set by scripts/register-ts.js: its transpile cache),
 * else ts-node (Jest).
 */
function workerEntry(): { file: string; tsNode?: string } {
  const ext = extname(__filename);
  const file = join(__dirname, `training-worker${ext}`);
  if (ext !== '.ts') return { file };
  return { file, tsNode: process.env['HISTOFED_TS_REGISTER'] || require.resolve('ts-node') };
}

// Runs in the new thread: registers the TypeScript loader (a worker does not inherit the parent's
// require hooks; HistoFed's registers itself when required, ts-node needs register()), then loads
// the worker module by absolute path.
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
const path = require('node:path');
if (workerData.tsNode) {
  const loader = require(workerData.tsNode);
  if (typeof loader.register === 'function') {
    loader.register({
      transpileOnly: true,
      projectSearchDir: path.dirname(workerData.file),
      compilerOptions: { module: 'commonjs' },
    });
  }
}
require(workerData.file);
`;

/** One worker thread and its outstanding requests. */
class WorkerHandle {
  readonly worker: Worker;
  readonly ready: Promise<SelectedBackend>;
  private readonly pending = new Map<number, Pending>();
  private failure: TrainingWorkerError | null = null;
  private uncaught: Error | null = null;
  private closing = false;
  private holds = 0;
  private readonly threadId: number;
  exited = false;

  constructor(
    readonly index: number,
    backend: BackendChoice,
  ) {
    const entry = workerEntry();
    const data: TrainingWorkerData = { histofedTrainingWorker: true, index, backend, ...entry };
    this.worker = new Worker(BOOTSTRAP, { eval: true, workerData: data });
    this.threadId = this.worker.threadId;
    this.worker.unref();
    let ready!: { resolve(b: SelectedBackend): void; reject(e: Error): void };
    this.hold(1);
    this.ready = new Promise<SelectedBackend>((resolve, reject) => (ready = { resolve, reject })).finally(() => this.hold(-1));
    this.ready.catch(() => undefined); // observed by the pool; avoid an unhandled rejection meanwhile
    this.worker.on('message', (m: FromWorker) => {
      if (m.type === 'ready') return ready.resolve(m.backend);
      if (m.type === 'error') {
        const err = this.error(m.code ?? 'WORKER_FAILED', `failed: ${m.message}`);
        if (m.stack) err.stack = `${err.name}: ${err.message}\n--- in the worker ---\n${m.stack}`;
        if (m.id === undefined) return ready.reject(err);
        return this.settle(m.id, (p) => p.reject(err));
      }
      this.settle(m.id, (p) => p.resolve(m));
    });
    this.worker.on('error', (e) => {
      this.uncaught = e;
    });
    this.worker.on('exit', (code) => {
      this.exited = true;
      const err = this.closing
        ? this.error('POOL_CLOSED', 'stopped: the training pool was closed')
        : this.uncaught
          ? this.error('WORKER_FAILED', `failed: ${this.uncaught.message}`)
          : this.error('WORKER_EXITED', `exited unexpectedly (exit code ${code})`);
      this.failure = err;
      ready.reject(err);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
  }

  private error(code: string, what: string): TrainingWorkerError {
    return new TrainingWorkerError(this.index, code, `training worker ${this.index} (thread ${this.threadId}) ${what}`);
  }

  private settle(id: number, f: (p: Pending) => void): void {
    const p = this.pending.get(id);
    if (p === undefined) return; // a reply to an abandoned call
    this.pending.delete(id);
    f(p);
  }

  request<T extends Reply['type']>(msg: Request, expect: T, transfer?: TransferListItem[]): Promise<ReplyOf<T>> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = nextId++;
    this.hold(1);
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    })
      .finally(() => this.hold(-1))
      .then((r) => {
        if (r.type !== expect) throw this.error('WORKER_PROTOCOL', `answered ${r.type} to a ${msg.type} request`);
        return r as ReplyOf<T>;
      });
  }

  /**
   * Keeps the thread ref'd (the process alive) while something waits for it: a request, the
   * start-up, a training call. An idle worker is unref'd.
   */
  hold(delta: 1 | -1): void {
    const before = this.holds;
    this.holds += delta;
    if (this.exited) return;
    if (before === 0 && this.holds > 0) this.worker.ref();
    else if (before > 0 && this.holds === 0) this.worker.unref();
  }

  async terminate(): Promise<void> {
    this.closing = true;
    if (!this.exited) await this.worker.terminate();
  }
}

function averageInto(target: Float32Array, all: readonly Float32Array[]): Float32Array {
  for (let j = 0; j < target.length; j++) {
    let s = 0;
    for (const a of all) s += a[j];
    target[j] = s / all.length;
  }
  return target;
}

/** The checks trainLocal makes before training, on the main thread (the workers check the weights). */
function checkTrainCall(spec: ModelSpec, data: LabeledImages, opts: TrainOptions): void {
  validateModelSpec(spec);
  if (opts.alignment !== undefined) {
    // CORAL and MMD are not sums over rows: sharded gradients would need the whole batch's features.
    throw new ValidationError('alignment: feature alignment trains in this thread only (trainLocal); the training pool does not support it, train without a pool');
  }
  const subtypes = spec.subtypeParents?.length ?? 0;
  checkTrainOptions(opts, spec.numClasses, subtypes, data.count);
  // A fine-tuning spec's rows are the backbone's feature maps, whose shape the workers' models check.
  const shape = spec.backbone?.trainFrom !== undefined ? dataRowShape(data) : (featureInputShape(spec) ?? spec.imageSize);
  checkLabeledImages(data, shape, spec.numClasses, 'data', subtypes);
  if (subtypes > 0) checkSubtypeParents(data, spec.subtypeParents as readonly number[]);
  if (data.count === 0) throw new ValidationError('data.count: there are no training images');
  checkFinite(data.images, shape);
}

/**
 * A reusable pool of training workers: start it once (`createTrainingPool`), call `train` every
 * round, `close` at the end. Calls to `train` run one after the other.
 */
export class TrainingPool {
  private workers: WorkerHandle[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private backendInfo: SelectedBackend | null = null;

  /** Use `createTrainingPool`. */
  constructor(
    readonly size: number,
    readonly backendChoice: BackendChoice,
    readonly backboneDir?: string,
  ) {}

  /** The backend the workers run on (after start). */
  get backend(): SelectedBackend | null {
    return this.backendInfo;
  }

  /** Starts missing or exited workers and waits until every worker has loaded its backend. */
  async start(): Promise<void> {
    if (this.closed) throw new HistoFedError('POOL_CLOSED', 'the training pool is closed');
    for (let i = 0; i < this.size; i++) {
      if (this.workers[i] === undefined || this.workers[i].exited) this.workers[i] = new WorkerHandle(i, this.backendChoice);
    }
    const backends = await Promise.all(this.workers.map((w) => w.ready));
    this.backendInfo = backends[0];
  }

  private serialize<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Trains from `initial` on `data` (see the module comment); resolves with trainLocal's result and
   * the trained weights. Rejects like trainLocal (ValidationError before any work, 'ABORTED',
   * 'TRAINING_DIVERGED'), and with a TrainingWorkerError naming the worker when one fails; an
   * exited worker is restarted by the next call.
   */
  train(spec: ModelSpec, initial: WeightSet, data: LabeledImages, opts: TrainOptions): Promise<ParallelTrainResult> {
    return this.serialize(() => this.run(spec, initial, data, opts));
  }

  private async run(spec: ModelSpec, initial: WeightSet, data: LabeledImages, opts: TrainOptions): Promise<ParallelTrainResult> {
    if (this.closed) throw new HistoFedError('POOL_CLOSED', 'the training pool is closed');
    checkTrainCall(spec, data, opts);

    await this.start();
    const workers = this.workers;
    const W = workers.length;
    const all = <T extends Reply['type']>(msg: Request, expect: T) => Promise.all(workers.map((w) => w.request(msg, expect)));
    for (const w of workers) w.hold(1);
    try {
      await all(
        {
          type: 'begin',
          spec,
          initial,
          images: shareImages(data).images,
          labels: data.labels,
          subtypes: isTwoStage(spec) ? data.subtypes : undefined,
          learningRate: opts.learningRate,
          proximalMu: opts.proximalMu,
          globalWeights: opts.proximalMu > 0 ? opts.globalWeights : undefined,
          classWeights: opts.classWeights,
          subtypeWeights: opts.subtypeWeights,
          sampleWeights: opts.sampleWeights,
          backboneDir: this.backboneDir,
        },
        'ok',
      );

      const batches = Math.ceil(data.count / opts.batchSize);
      let lastEpochLoss = NaN;
      for (let epoch = 1; epoch <= opts.epochs; epoch++) {
        const order = shuffledIndices(data.count, mixSeed(opts.seed, epoch));
        // The gradient requests of batch b, one shard per worker.
        const gradients = (b: number) => {
          const start = b * opts.batchSize;
          const n = Math.min(data.count, start + opts.batchSize) - start;
          const replies = Promise.all(
            workers.map((w, i) => {
              const from = start + Math.floor((i * n) / W);
              const to = start + Math.floor(((i + 1) * n) / W);
              return w.request({ type: 'grad', indices: order.slice(from, to), batchSize: n }, 'grad');
            }),
          );
          replies.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
          return replies;
        };
        let epochSum = 0;
        let next: ReturnType<typeof gradients> | null = null;
        for (let b = 0; b < batches; b++) {
          if (opts.signal?.aborted) throw new HistoFedError('ABORTED', `training aborted in epoch ${epoch}, batch ${b + 1}`);
          const replies = await (next ?? gradients(b));
          next = null;
          let sum: Float32Array | null = null;
          let loss = 0;
          for (const r of replies) {
            if (r.grads === null) continue;
            loss += r.loss;
            if (sum === null) sum = r.grads;
            else for (let j = 0; j < sum.length; j++) sum[j] += r.grads[j];
          }
          if (!Number.isFinite(loss)) {
            throw new HistoFedError(
              'TRAINING_DIVERGED',
              `training diverged: the loss is ${loss} in epoch ${epoch}, batch ${b + 1}; lower the learning rate`,
            );
          }
          // A worker handles its messages in order, so the next batch's gradient requests go right
          // behind the update (one round trip per step instead of two); they are computed on the
          // updated weights, as before. An abort is checked before they are sent.
          const applied = all({ type: 'apply', grads: sum as Float32Array }, 'ok');
          if (b + 1 < batches && opts.signal?.aborted !== true) next = gradients(b + 1);
          await applied;
          epochSum += loss;
          opts.onProgress?.({ epoch, epochs: opts.epochs, batch: b + 1, batches, loss });
        }
        lastEpochLoss = epochSum / batches;
        const ends = await all({ type: 'epochEnd' }, 'epochEnd');
        if (ends[0].nonFinite !== null) {
          throw new HistoFedError(
            'TRAINING_DIVERGED',
            `training diverged: weight "${ends[0].nonFinite}" is not finite after epoch ${epoch}; lower the learning rate`,
          );
        }
        const stats = ends.map((e) => e.stats);
        if (W > 1 && stats[0] !== null) {
          const mean = averageInto(new Float32Array(stats[0].length), stats as Float32Array[]);
          await all({ type: 'setStats', stats: mean }, 'ok');
        }
      }
      const { weights } = await workers[0].request({ type: 'weights' }, 'weights');
      return { loss: lastEpochLoss, samples: data.count, epochs: opts.epochs, weights };
    } finally {
      // Release the optimizer state and the images in the workers (best effort: a failed worker is gone).
      await Promise.allSettled(workers.map((w) => w.request({ type: 'end' }, 'ok')));
      for (const w of workers) w.hold(-1);
    }
  }

  /**
   * A frozen backbone's tile-feature extractor that runs on the pool's workers (libs/data
   * TileRowExtractor): each extract call goes to the least busy worker, so loading tile sets with a
   * concurrency of the pool size keeps every core busy. Workers load the backbone once.
   */
  async featureExtractor(
    backbone: BackboneSpec,
    size: number,
    dir?: string,
  ): Promise<{ id: string; rowShape: readonly number[]; extract(tiles: Float32Array, count: number, size: number): Promise<Float32Array> }> {
    if (this.closed) throw new HistoFedError('POOL_CLOSED', 'the training pool is closed');
    await this.start();
    const info = await this.workers[0].request({ type: 'featureInfo', backbone, size, dir }, 'featureInfo');
    const busy = new Array<number>(this.workers.length).fill(0);
    return {
      id: info.extractorId,
      rowShape: info.rowShape,
      extract: async (tiles, count, tileSize) => {
        if (tileSize !== size) throw new ValidationError(`feature extractor: built for ${size} px tiles, got ${tileSize} px`);
        await this.start();
        const i = busy.indexOf(Math.min(...busy));
        busy[i]++;
        try {
          // A copy goes to the worker (transferred), so the caller's array stays usable.
          const copy = tiles.slice();
          const r = await this.workers[i].request({ type: 'features', backbone, size, dir, tiles: copy, count }, 'features', [copy.buffer as ArrayBuffer]);
          return r.rows;
        } finally {
          busy[i]--;
        }
      },
    };
  }

  /** tf.memory() of every worker (for leak checks). */
  workerMemory(): Promise<MemoryInfo[]> {
    return this.serialize(async () => {
      await this.start();
      return Promise.all(this.workers.map(async (w) => (await w.request({ type: 'memory' }, 'memory')).memory));
    });
  }

  /** The current weights of every worker's replica (they are identical after `train`). */
  replicaWeights(): Promise<NamedTensor[][]> {
    return this.serialize(async () => {
      await this.start();
      return Promise.all(this.workers.map(async (w) => (await w.request({ type: 'weights' }, 'weights')).weights));
    });
  }

  /** Terminates the workers; a `train` call in progress rejects with code 'POOL_CLOSED'. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

function checkPoolOptions(o: TrainingPoolOptions): { workers: number; backend: BackendChoice } {
  const workers = o.workers ?? availableParallelism();
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    throw new ValidationError(`workers: must be an integer in [1, 256], got ${workers}`);
  }
  const backend = parseBackendChoice(o.backend ?? currentBackend()?.name ?? 'auto');
  return { workers, backend };
}

/** Starts a training pool; resolves when every worker has loaded its backend (rejects naming the worker otherwise). */
export async function createTrainingPool(options: TrainingPoolOptions = {}): Promise<TrainingPool> {
  const { workers, backend } = checkPoolOptions(options);
  const pool = new TrainingPool(workers, backend, options.backboneDir);
  try {
    await pool.start();
  } catch (e) {
    await pool.close();
    throw e;
  }
  return pool;
}

/** One-off parallel training: starts a pool, trains, closes it. Prefer a pool that lives across rounds. */
export async function trainLocalParallel(
  spec: ModelSpec,
  initial: WeightSet,
  data: LabeledImages,
  opts: TrainOptions & TrainingPoolOptions,
): Promise<ParallelTrainResult> {
  const { workers, backend, ...trainOpts } = opts;
  checkTrainCall(spec, data, trainOpts);
  const pool = await createTrainingPool({ workers, backend });
  try {
    return await pool.train(spec, initial, data, trainOpts);
  } finally {
    await pool.close();
  }
}
