/**
 * Gated attention-based multiple-instance learning (Ilse, Tomczak & Welling 2018) over bags of
 * tile feature vectors (bags.ts), in plain tfjs ops on tf.variable weights:
 *
 *   h_k = x_k, or relu(W_fc x_k + b_fc) with hiddenUnits > 0            (tile embedding, D values)
 *   s_k = w^T (tanh(V^T h_k + b_V) ⊙ sigmoid(U^T h_k + b_U))             (V, U: [D, L]; w: [L, 1])
 *   a   = softmax_k(s_k) over the bag's real tiles (padding: a_k = 0 exactly)
 *   z   = Σ_k a_k h_k                                                    (the bag's embedding)
 *   out = [softmax(z W_head + b_head), softmax(z W_sub + b_sub)]         (stage-1, then subtypes)
 *
 * The output row is laid out as the layers models' (models.ts): the stage-1 probabilities, then
 * for a two-stage config the subtype probabilities; losses.ts's outputLoss trains it. Weight names
 * are fixed ('attention_v/kernel', 'head/bias', ...) and `getMilWeights`/`setMilWeights` move them
 * as a NamedTensor list, so the module can be federated like any head.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec, NamedTensor, TensorSpec, WeightSet } from '@histofed/fl-core';
import { HistoFedError, ValidationError, WeightLayoutError, assertSameLayout, isTwoStage, layoutOf, namedTensor } from '@histofed/fl-core';
import { assertBackendReady } from '../backend';
import { outputLoss, proximalTerm, type TrainingTargets } from '../losses';
import { validateHeads } from '../models';
import { HEAD_LAYER, SUBTYPE_HEAD_LAYER } from '../model-layers';
import { mixSeed, mulberry32, shuffledIndices } from '../random';
import { bagBatch, type TileBags } from './bags';

export interface MilConfig {
  /** Values of one tile feature vector. */
  readonly dim: number;
  /** Units L of the attention network (V and U). */
  readonly attentionUnits: number;
  /** Units of a ReLU tile embedding before the attention; 0 = attend over the features as they are. */
  readonly hiddenUnits: number;
  /** Stage-1 classes. */
  readonly numClasses: number;
  /** Subtype classes of a two-stage head (0: single stage). */
  readonly subtypes: number;
  /** Dropout rate on the bag embedding z while training, in [0, 1). */
  readonly dropout: number;
}

/** A gated attention-MIL module: its config and its variables in layout order (the caller disposes them: disposeMil). */
export interface MilParams {
  readonly config: MilConfig;
  readonly names: readonly string[];
  readonly variables: readonly tf.Variable[];
}

export const DEFAULT_MIL_ATTENTION_UNITS = 128;

/** Names and shapes of a config's weights, in order. */
export function milLayout(config: MilConfig): TensorSpec[] {
  const d = config.hiddenUnits > 0 ? config.hiddenUnits : config.dim;
  const L = config.attentionUnits;
  const out: TensorSpec[] = [];
  if (config.hiddenUnits > 0) out.push({ name: 'fc1/kernel', shape: [config.dim, d] }, { name: 'fc1/bias', shape: [d] });
  out.push(
    { name: 'attention_v/kernel', shape: [d, L] },
    { name: 'attention_v/bias', shape: [L] },
    { name: 'attention_u/kernel', shape: [d, L] },
    { name: 'attention_u/bias', shape: [L] },
    { name: 'attention_w/kernel', shape: [L, 1] },
    { name: `${HEAD_LAYER}/kernel`, shape: [d, config.numClasses] },
    { name: `${HEAD_LAYER}/bias`, shape: [config.numClasses] },
  );
  if (config.subtypes > 0) {
    out.push({ name: `${SUBTYPE_HEAD_LAYER}/kernel`, shape: [d, config.subtypes] }, { name: `${SUBTYPE_HEAD_LAYER}/bias`, shape: [config.subtypes] });
  }
  return out;
}

/** Values per output row: stage-1 classes + subtypes. */
export function milOutputWidth(config: MilConfig): number {
  return config.numClasses + config.subtypes;
}

/** Throws a ValidationError naming the first invalid field. */
export function validateMilConfig(config: MilConfig): void {
  const integer = (name: keyof MilConfig, min: number, max: number) => {
    const v = config[name];
    if (!Number.isInteger(v) || v < min || v > max) throw new ValidationError(`mil.${name}: must be an integer in [${min}, ${max}], got ${v}`);
  };
  integer('dim', 1, 65536);
  integer('attentionUnits', 1, 4096);
  integer('hiddenUnits', 0, 4096);
  integer('numClasses', 2, 1024);
  integer('subtypes', 0, 1024);
  if (config.subtypes === 1) throw new ValidationError('mil.subtypes: a second stage needs at least 2 subtypes');
  if (!Number.isFinite(config.dropout) || config.dropout < 0 || config.dropout >= 1) {
    throw new ValidationError(`mil.dropout: must be in [0, 1), got ${config.dropout}`);
  }
}

/**
 * The config of an attention-MIL head for `spec`'s classes (numClasses, subtypeParents) over tile
 * features of `dim` values; `options` override attentionUnits (default 128), hiddenUnits (default
 * the spec's options.denseUnits, else 0) and dropout (default the spec's options.dropout, else 0.25).
 */
export function milConfigForSpec(
  spec: Pick<ModelSpec, 'numClasses' | 'subtypeParents' | 'options'> & Partial<ModelSpec>,
  dim: number,
  options: Partial<Pick<MilConfig, 'attentionUnits' | 'hiddenUnits' | 'dropout'>> = {},
): MilConfig {
  validateHeads(spec as ModelSpec);
  const config: MilConfig = {
    dim,
    attentionUnits: options.attentionUnits ?? DEFAULT_MIL_ATTENTION_UNITS,
    hiddenUnits: options.hiddenUnits ?? spec.options?.['denseUnits'] ?? 0,
    numClasses: spec.numClasses,
    subtypes: isTwoStage(spec) ? (spec.subtypeParents as readonly number[]).length : 0,
    dropout: options.dropout ?? spec.options?.['dropout'] ?? 0.25,
  };
  validateMilConfig(config);
  return config;
}

/**
 * Fresh variables for `config`: Glorot-uniform kernels drawn from `seed` (the same seed gives the
 * same weights in every process), zero biases.
 */
export function createMil(config: MilConfig, seed = 1): MilParams {
  validateMilConfig(config);
  if (!Number.isInteger(seed)) throw new ValidationError(`seed: must be an integer, got ${seed}`);
  assertBackendReady();
  const layout = milLayout(config);
  const variables: tf.Variable[] = [];
  try {
    layout.forEach((spec, i) => {
      const size = spec.shape.reduce((a, b) => a * b, 1);
      const values = new Float32Array(size);
      if (spec.shape.length === 2) {
        const limit = Math.sqrt(6 / (spec.shape[0] + spec.shape[1]));
        const rand = mulberry32(mixSeed(seed, i + 1));
        for (let j = 0; j < size; j++) values[j] = (rand() * 2 - 1) * limit;
      }
      // tf.variable without a name: variable names are global in tfjs; ours live in `names`.
      variables.push(tf.tidy(() => tf.variable(tf.tensor(values, [...spec.shape], 'float32'), true)));
    });
  } catch (e) {
    for (const v of variables) v.dispose();
    throw e;
  }
  return { config, names: layout.map((t) => t.name), variables };
}

/** Disposes the module's variables. */
export function disposeMil(params: MilParams): void {
  for (const v of params.variables) v.dispose();
}

/** Copies the weights out, in layout order. */
export function getMilWeights(params: MilParams): NamedTensor[] {
  return params.variables.map((v, i) => namedTensor(params.names[i], v.shape, new Float32Array(v.dataSync() as Float32Array)));
}

/** Writes `weights` into the module; names, order and shapes must match its layout (nothing is written otherwise). */
export function setMilWeights(params: MilParams, weights: WeightSet): void {
  assertSameLayout(milLayout(params.config), layoutOf(weights), 'setMilWeights');
  for (const w of weights) {
    const size = w.shape.reduce((a, b) => a * b, 1);
    if (w.values.length !== size) {
      throw new WeightLayoutError(`setMilWeights: tensor "${w.name}" has ${w.values.length} values for shape [${w.shape.join(', ')}] (${size})`);
    }
  }
  weights.forEach((w, i) => {
    const t = tf.tensor(new Float32Array(w.values), [...w.shape], 'float32');
    try {
      params.variables[i].assign(t);
    } finally {
      t.dispose();
    }
  });
}

// A type (not an interface) so that tf.tidy can return it.
export type MilOutput = {
  /** [bags, numClasses + subtypes]: stage-1 softmax, then the subtype softmax. */
  readonly probabilities: tf.Tensor2D;
  /** [bags, tiles]: attention weights, summing to 1 over each bag's real tiles, exactly 0 on padding. */
  readonly attention: tf.Tensor2D;
};

/** Added to the attention scores of padded tiles before the softmax. */
const MASKED_SCORE = -1e9;

/**
 * The forward pass on `features` [bags, tiles, dim] with `mask` [bags, tiles] (1 = real tile).
 * `training` applies dropout to z (seeded by `seed`). Intermediate tensors are disposed; the caller
 * owns the two returned tensors (or calls this inside tf.tidy / a gradient function).
 */
export function milForward(params: MilParams, features: tf.Tensor3D, mask: tf.Tensor2D, training = false, seed?: number): MilOutput {
  const { config } = params;
  const [bags, tiles, dim] = features.shape;
  if (dim !== config.dim) throw new ValidationError(`features: the module reads ${config.dim} features per tile, got ${dim}`);
  if (mask.shape[0] !== bags || mask.shape[1] !== tiles) {
    throw new ValidationError(`mask: expected [${bags}, ${tiles}], got [${mask.shape.join(', ')}]`);
  }
  return tf.tidy(() => {
    const w = new Map(params.names.map((n, i) => [n, params.variables[i] as tf.Tensor]));
    const get = (name: string) => w.get(name) as tf.Tensor;
    const dense = (x: tf.Tensor2D, layer: string) => tf.add(tf.matMul(x, get(`${layer}/kernel`) as tf.Tensor2D), get(`${layer}/bias`)) as tf.Tensor2D;

    let h = tf.reshape(features, [bags * tiles, dim]) as tf.Tensor2D;
    if (config.hiddenUnits > 0) h = tf.relu(dense(h, 'fc1'));
    const d = h.shape[1];
    const gated = tf.mul(tf.tanh(dense(h, 'attention_v')), tf.sigmoid(dense(h, 'attention_u'))) as tf.Tensor2D;
    const scores = tf.reshape(tf.matMul(gated, get('attention_w/kernel') as tf.Tensor2D), [bags, tiles]);
    const masked = tf.add(scores, tf.mul(tf.sub(1, mask), MASKED_SCORE));
    const soft = tf.mul(tf.softmax(masked, -1), mask);
    // Renormalize after masking: padded tiles hold exactly 0 and the real ones sum to 1.
    const attention = tf.div(soft, tf.maximum(tf.sum(soft, -1, true), 1e-30)) as tf.Tensor2D;

    const h3 = tf.reshape(h, [bags, tiles, d]) as tf.Tensor3D;
    let z = tf.reshape(tf.matMul(tf.reshape(attention, [bags, 1, tiles]) as tf.Tensor3D, h3), [bags, d]) as tf.Tensor2D;
    if (training && config.dropout > 0) z = tf.dropout(z, config.dropout, undefined, seed) as tf.Tensor2D;
    const stage1 = tf.softmax(dense(z, HEAD_LAYER));
    const probabilities = config.subtypes > 0 ? (tf.concat([stage1, tf.softmax(dense(z, SUBTYPE_HEAD_LAYER))], 1) as tf.Tensor2D) : stage1;
    return { probabilities, attention };
  });
}

export interface MilPrediction {
  /** [bags, numClasses + subtypes], row-major. */
  readonly probabilities: Float32Array;
  /** [bags, bags.maxTiles], row-major: each slot's attention (0 on padding; see TileBags.tileRows). */
  readonly attention: Float32Array;
  readonly width: number;
}

/** Probabilities and attention of every bag, `batchSize` bags at a time (inference: no dropout). */
export function predictMil(params: MilParams, bags: TileBags, batchSize = 64): MilPrediction {
  assertBackendReady();
  checkBags(params.config, bags, false);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ValidationError(`batchSize: must be an integer >= 1, got ${batchSize}`);
  const width = milOutputWidth(params.config);
  const probabilities = new Float32Array(bags.count * width);
  const attention = new Float32Array(bags.count * bags.maxTiles);
  for (let start = 0; start < bags.count; start += batchSize) {
    const end = Math.min(bags.count, start + batchSize);
    const batch = bagBatch(bags, start, end);
    const n = end - start;
    const out = tf.tidy(() =>
      milForward(params, tf.tensor3d(batch.features, [n, batch.tiles, bags.dim]), tf.tensor2d(batch.mask, [n, batch.tiles]), false),
    );
    try {
      probabilities.set(out.probabilities.dataSync() as Float32Array, start * width);
      const a = out.attention.dataSync() as Float32Array;
      for (let i = 0; i < n; i++) attention.set(a.subarray(i * batch.tiles, (i + 1) * batch.tiles), (start + i) * bags.maxTiles);
    } finally {
      out.probabilities.dispose();
      out.attention.dispose();
    }
  }
  return { probabilities, attention, width };
}

export interface MilTrainOptions {
  readonly epochs: number;
  /** Bags per mini-batch. */
  readonly batchSize: number;
  readonly learningRate: number;
  /** Seeds the per-epoch shuffle and the dropout masks. */
  readonly seed: number;
  /** Per stage-1 class loss weights (length numClasses). */
  readonly classWeights?: readonly number[];
  /** Per subtype loss weights (length subtypes). */
  readonly subtypeWeights?: readonly number[];
  /** FedProx coefficient mu (0 or absent: none); needs globalWeights. */
  readonly proximalMu?: number;
  /** The round's global weights (the module's layout), anchor of the proximal term. */
  readonly globalWeights?: WeightSet;
  readonly onProgress?: (p: { epoch: number; epochs: number; batch: number; batches: number; loss: number }) => void;
  /** Stops training between mini-batches (rejects with code 'ABORTED'). */
  readonly signal?: AbortSignal;
}

export interface MilTrainResult {
  /** Mean loss over the last epoch's mini-batches (class-weighted when given; without the proximal term). */
  readonly loss: number;
  /** Bags (images) trained on: the sample count FedAvg would weigh the update with. */
  readonly samples: number;
  readonly epochs: number;
}

function checkBags(config: MilConfig, bags: TileBags, training: boolean): void {
  if (bags.dim !== config.dim) throw new ValidationError(`bags.dim: the module reads ${config.dim} features per tile, got ${bags.dim}`);
  if (bags.count < 1) throw new ValidationError('bags.count: there are no bags');
  if (!training) return;
  const classes = (values: Int32Array, k: number, what: string) => {
    values.forEach((v, i) => {
      if (!(v >= 0 && v < k)) throw new ValidationError(`${what}[${i}]: ${v} is not a class index in [0, ${k})`);
    });
  };
  classes(bags.labels, config.numClasses, 'bags.labels');
  if (config.subtypes > 0) {
    if (bags.subtypes === undefined) throw new ValidationError('bags.subtypes: a two-stage head needs the subtype of every image, none given');
    classes(bags.subtypes, config.subtypes, 'bags.subtypes');
  }
  for (let i = 0; i < bags.features.length; i++) {
    const v = bags.features[i];
    if (v - v !== 0) throw new ValidationError(`bags.features: bag ${Math.floor(i / (bags.maxTiles * bags.dim))} holds a non-finite value (${v})`);
  }
}

function checkTrainOptions(config: MilConfig, o: MilTrainOptions): void {
  if (!Number.isInteger(o.epochs) || o.epochs < 1) throw new ValidationError(`epochs: must be an integer >= 1, got ${o.epochs}`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new ValidationError(`batchSize: must be an integer >= 1, got ${o.batchSize}`);
  if (!Number.isFinite(o.learningRate) || o.learningRate <= 0) throw new ValidationError(`learningRate: must be a positive number, got ${o.learningRate}`);
  if (!Number.isInteger(o.seed)) throw new ValidationError(`seed: must be an integer, got ${o.seed}`);
  const weights = (w: readonly number[] | undefined, n: number, what: string) => {
    if (w === undefined) return;
    if (w.length !== n) throw new ValidationError(`${what}: expected ${n} weights, got ${w.length}`);
    w.forEach((x, i) => {
      if (!Number.isFinite(x) || x < 0) throw new ValidationError(`${what}[${i}]: must be >= 0, got ${x}`);
    });
  };
  weights(o.classWeights, config.numClasses, 'classWeights');
  if (o.subtypeWeights !== undefined && config.subtypes === 0) throw new ValidationError('subtypeWeights: the module has no subtype head');
  weights(o.subtypeWeights, config.subtypes, 'subtypeWeights');
  const mu = o.proximalMu ?? 0;
  if (!Number.isFinite(mu) || mu < 0) throw new ValidationError(`proximalMu: must be a number >= 0, got ${mu}`);
  if (mu > 0 && o.globalWeights === undefined) throw new ValidationError('globalWeights: the proximal term (proximalMu > 0) needs the round\'s global weights');
  if (o.globalWeights !== undefined) assertSameLayout(milLayout(config), layoutOf(o.globalWeights), 'globalWeights');
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Trains the module in place on `bags` with Adam over shuffled mini-batches of bags (the loss of
 * losses.ts's outputLoss on the bag outputs, plus the FedProx term when asked). Every tensor made
 * here is disposed: `tf.memory().numTensors` is the same before and after.
 */
export async function trainMil(params: MilParams, bags: TileBags, options: MilTrainOptions): Promise<MilTrainResult> {
  assertBackendReady();
  const { config } = params;
  checkTrainOptions(config, options);
  checkBags(config, bags, true);
  const targets: TrainingTargets = {
    labels: bags.labels,
    subtypes: config.subtypes > 0 ? bags.subtypes : undefined,
    classWeights: options.classWeights,
    subtypeWeights: options.subtypeWeights,
  };
  const mu = options.proximalMu ?? 0;
  const vars = params.variables;
  const optimizer = tf.train.adam(options.learningRate);
  const globals =
    mu > 0 ? (options.globalWeights as WeightSet).map((t) => tf.tensor(new Float32Array(t.values), [...t.shape], 'float32')) : [];
  try {
    const batches = Math.ceil(bags.count / options.batchSize);
    let lastEpochLoss = NaN;
    for (let epoch = 1; epoch <= options.epochs; epoch++) {
      const order = shuffledIndices(bags.count, mixSeed(options.seed, epoch));
      let sum = 0;
      for (let b = 0; b < batches; b++) {
        if (options.signal?.aborted) throw new HistoFedError('ABORTED', `training aborted in epoch ${epoch}, batch ${b + 1}`);
        const start = b * options.batchSize;
        const end = Math.min(bags.count, start + options.batchSize);
        const batch = bagBatch(bags, start, end, order);
        const n = end - start;
        const dropoutSeed = mixSeed(mixSeed(options.seed, epoch), b + 1);
        let kept: tf.Scalar | undefined;
        let loss: tf.Scalar;
        try {
          loss = tf.tidy(() => {
            const x = tf.tensor3d(batch.features, [n, batch.tiles, bags.dim]);
            const m = tf.tensor2d(batch.mask, [n, batch.tiles]);
            const cost = optimizer.minimize(
              () => {
                const out = milForward(params, x, m, true, dropoutSeed);
                const data = outputLoss(out.probabilities, config.numClasses, targets, batch.indices);
                if (mu === 0) return data;
                kept = tf.keep(data);
                return tf.add(data, proximalTerm(vars, globals, mu)) as tf.Scalar;
              },
              true,
              vars as tf.Variable[],
            ) as tf.Scalar;
            return kept ?? cost;
          });
        } catch (e) {
          kept?.dispose();
          throw e;
        }
        const value = (await loss.data())[0];
        loss.dispose();
        if (!Number.isFinite(value)) {
          throw new HistoFedError('TRAINING_DIVERGED', `training diverged: the loss is ${value} in epoch ${epoch}, batch ${b + 1}; lower the learning rate`);
        }
        sum += value;
        options.onProgress?.({ epoch, epochs: options.epochs, batch: b + 1, batches, loss: value });
        await yieldToEventLoop();
      }
      lastEpochLoss = sum / batches;
    }
    return { loss: lastEpochLoss, samples: bags.count, epochs: options.epochs };
  } finally {
    optimizer.dispose();
    for (const g of globals) g.dispose();
  }
}
