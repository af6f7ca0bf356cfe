/**
 * A training worker of the pool in parallel-training.ts (runs in a worker_threads thread).
 *
 * It holds one replica of the model (built once per ModelSpec, reused across training calls) and
 * its own Adam optimizer. Per step it computes the gradients of its shard of the mini-batch, then
 * applies the sum over all workers that the main thread sends back; every replica applies the
 * same update, so the replicas stay identical. See training-messages.ts for the protocol.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { MessagePort, TransferListItem } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec, WeightSet } from '@histofed/fl-core';
import { HistoFedError } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { imageBatch, modelGeometry } from './batches';
import { assertModelTrains } from './kernel-check';
import { outputLoss, type TrainingTargets } from './losses';
import { tileFeatureExtractor } from './backbones/backbone';
import { buildModelAsync } from './model-spec';
import type { FromWorker, ToWorker, TrainingWorkerData } from './training-messages';
import { getWeights, setWeights, trainableGlobalTensors, weightName } from './weights-bridge';

interface Call {
  readonly optimizer: tf.Optimizer;
  /** FedProx: the global weights of the trainable variables, in their order (empty when mu = 0). */
  readonly globals: tf.Tensor[];
  readonly mu: number;
  readonly images: Float32Array;
  readonly targets: TrainingTargets;
}

class Replica {
  private model: tfl.LayersModel | null = null;
  private specKey = '';
  private vars: tf.Variable[] = [];
  /** Non-trainable weights (batch-norm moving statistics). */
  private stats: tfl.LayerVariable[] = [];
  private call: Call | null = null;

  async begin(m: Extract<ToWorker, { type: 'begin' }>): Promise<void> {
    this.end();
    const model = await this.modelFor(m.spec, m.backboneDir);
    setWeights(model, m.initial);
    let globals: tf.Tensor[] = [];
    const mu = m.proximalMu > 0 && m.globalWeights !== undefined ? m.proximalMu : 0;
    if (mu > 0) {
      globals = trainableGlobalTensors(model, m.globalWeights as WeightSet);
    }
    this.call = {
      optimizer: tf.train.adam(m.learningRate),
      globals,
      mu,
      images: m.images,
      targets: { labels: m.labels, subtypes: m.subtypes, classWeights: m.classWeights, subtypeWeights: m.subtypeWeights, sampleWeights: m.sampleWeights },
    };
  }

  private async modelFor(spec: ModelSpec, backboneDir: string | undefined): Promise<tfl.LayersModel> {
    const key = JSON.stringify([spec.kind, spec.imageSize, spec.numClasses, spec.options ?? {}, spec.subtypeParents ?? [], spec.backbone ?? null]);
    if (this.model === null || key !== this.specKey) {
      this.model?.dispose();
      this.model = null;
      const model = await buildModelAsync(spec, 1, { dir: backboneDir });
      try {
        // Once per replica (the backend does not change in a worker), not once per call as trainLocal.
        assertModelTrains(model);
      } catch (e) {
        model.dispose();
        throw e;
      }
      this.model = model;
      this.specKey = key;
      this.vars = model.trainableWeights.map((v) => v.read() as tf.Variable);
      this.stats = model.nonTrainableWeights;
    }
    return this.model;
  }

  private active(): { model: tfl.LayersModel; call: Call } {
    if (this.model === null || this.call === null) throw new HistoFedError('WORKER_STATE', 'no training call in progress');
    return { model: this.model, call: this.call };
  }

  /** Loss (scaled) and the flattened gradients of the shard `indices`, in trainable-variable order. */
  grad(indices: Int32Array, batchSize: number): { loss: number; grads: Float32Array | null } {
    const { model, call } = this.active();
    const n = indices.length;
    if (n === 0) return { loss: 0, grads: null };
    const { inputShape, numClasses } = modelGeometry(model);
    const size = this.vars.reduce((s, v) => s + v.size, 0);
    const flat = new Float32Array(size);
    let loss = NaN;
    tf.tidy(() => {
      const x = imageBatch(call.images, inputShape, 0, n, indices);
      const { value, grads } = tf.variableGrads(() => {
        const output = model.apply(x, { training: true }) as tf.Tensor2D;
        // The shard's share of the batch mean: the shards' values and gradients sum to the batch's.
        return tf.mul(outputLoss(output, numClasses, call.targets, indices), n / batchSize) as tf.Scalar;
      }, this.vars);
      loss = value.dataSync()[0];
      let offset = 0;
      for (const v of this.vars) {
        const g = grads[v.name];
        flat.set(g.dataSync() as Float32Array, offset);
        offset += v.size;
      }
    });
    return { loss, grads: flat };
  }

  /** Adam step with the summed gradients plus, with FedProx, mu * (w - w_global). */
  apply(sum: Float32Array): void {
    const { call } = this.active();
    const size = this.vars.reduce((s, v) => s + v.size, 0);
    if (sum.length !== size) throw new HistoFedError('WORKER_STATE', `apply: expected ${size} gradient values, got ${sum.length}`);
    tf.tidy(() => {
      const named: tf.NamedTensorMap = {};
      let offset = 0;
      this.vars.forEach((v, i) => {
        let g: tf.Tensor = tf.tensor(sum.subarray(offset, offset + v.size), v.shape, 'float32');
        offset += v.size;
        if (call.mu > 0) g = tf.add(g, tf.mul(tf.sub(v, call.globals[i]), call.mu));
        named[v.name] = g;
      });
      call.optimizer.applyGradients(named);
    });
  }

  epochEnd(): { stats: Float32Array | null; nonFinite: string | null } {
    const { model } = this.active();
    let nonFinite: string | null = null;
    const trainable = model.trainableWeights;
    for (let i = 0; i < this.vars.length && nonFinite === null; i++) {
      const v = this.vars[i].dataSync();
      for (let j = 0; j < v.length; j++) {
        if (v[j] - v[j] !== 0) {
          nonFinite = weightName(trainable[i]);
          break;
        }
      }
    }
    if (this.stats.length === 0) return { stats: null, nonFinite };
    const size = this.stats.reduce((s, v) => s + v.read().size, 0);
    const flat = new Float32Array(size);
    let offset = 0;
    for (const v of this.stats) {
      const t = v.read();
      flat.set(t.dataSync() as Float32Array, offset);
      offset += t.size;
    }
    return { stats: flat, nonFinite };
  }

  setStats(flat: Float32Array): void {
    this.active();
    let offset = 0;
    for (const v of this.stats) {
      const shape = v.read().shape;
      const n = v.read().size;
      const t = tf.tensor(flat.slice(offset, offset + n), shape, 'float32');
      offset += n;
      try {
        v.write(t);
      } finally {
        t.dispose();
      }
    }
  }

  weights(): WeightSet {
    if (this.model === null) throw new HistoFedError('WORKER_STATE', 'no model has been built yet');
    return getWeights(this.model);
  }

  end(): void {
    if (this.call === null) return;
    this.call.optimizer.dispose();
    for (const g of this.call.globals) g.dispose();
    this.call = null;
  }
}

function errorReply(e: unknown, id?: number): FromWorker {
  const err = e instanceof Error ? e : new Error(String(e));
  const raw = (err as { code?: unknown }).code;
  const code = typeof raw === 'string' ? raw : undefined;
  return { type: 'error', id, code, name: err.name, message: err.message, stack: err.stack };
}

type Handled = { reply: FromWorker; transfer?: TransferListItem[] };

function handle(replica: Replica, m: ToWorker): Handled | Promise<Handled> {
  switch (m.type) {
    case 'featureInfo':
      return tileFeatureExtractor(m.backbone, m.size, { dir: m.dir }).then((e) => ({
        reply: { type: 'featureInfo', id: m.id, extractorId: e.id, rowShape: [...e.rowShape] },
      }));
    case 'features':
      return tileFeatureExtractor(m.backbone, m.size, { dir: m.dir })
        .then((e) => e.extract(m.tiles, m.count, m.size))
        .then((rows) => ({ reply: { type: 'features', id: m.id, rows }, transfer: [rows.buffer as ArrayBuffer] }));
    case 'begin':
      return replica.begin(m).then(() => ({ reply: { type: 'ok', id: m.id } }));
    case 'grad': {
      const { loss, grads } = replica.grad(m.indices, m.batchSize);
      return { reply: { type: 'grad', id: m.id, loss, grads }, transfer: grads ? [grads.buffer as ArrayBuffer] : [] };
    }
    case 'apply':
      replica.apply(m.grads);
      return { reply: { type: 'ok', id: m.id } };
    case 'epochEnd': {
      const r = replica.epochEnd();
      return { reply: { type: 'epochEnd', id: m.id, ...r }, transfer: r.stats ? [r.stats.buffer as ArrayBuffer] : [] };
    }
    case 'setStats':
      replica.setStats(m.stats);
      return { reply: { type: 'ok', id: m.id } };
    case 'weights':
      return { reply: { type: 'weights', id: m.id, weights: [...replica.weights()] } };
    case 'memory':
      return { reply: { type: 'memory', id: m.id, memory: tf.memory() } };
    case 'end':
      replica.end();
      return { reply: { type: 'ok', id: m.id } };
  }
}

async function run(port: MessagePort, data: TrainingWorkerData): Promise<void> {
  const post = (r: FromWorker, transfer?: TransferListItem[]) => port.postMessage(r, transfer);
  let backend;
  try {
    backend = await selectBackend(data.backend);
  } catch (e) {
    post(errorReply(e));
    return;
  }
  const replica = new Replica();
  port.on('message', (m: ToWorker) => {
    try {
      const handled = handle(replica, m);
      if (handled instanceof Promise) {
        handled.then(({ reply, transfer }) => post(reply, transfer)).catch((e) => post(errorReply(e, m.id)));
      } else {
        post(handled.reply, handled.transfer);
      }
    } catch (e) {
      post(errorReply(e, m.id));
    }
  });
  post({ type: 'ready', backend });
}

const data = workerData as Partial<TrainingWorkerData> | null;
if (!isMainThread && parentPort !== null && data?.histofedTrainingWorker === true) {
  void run(parentPort, data as TrainingWorkerData);
}
