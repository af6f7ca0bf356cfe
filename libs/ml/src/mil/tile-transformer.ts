/**
 * `TileTransformer`: a small transformer encoder over the tiles of a bag (TransMIL-style, Shao et
 * al. 2021, with full softmax attention instead of the Nyström approximation: bags hold at most
 * MAX_BAG_TILES tiles). A tfjs-layers custom layer, registered with tfjs's serialization
 * (`tfl.loadLayersModel` / `tfl.models.modelFromJSON` load saved models again).
 *
 * Inputs `[h, mask, pos]`: h [b, T, D] the tiles' features, mask [b, T, 1] (1 = tile, 0 =
 * padding), pos [b, T, 2] the tiles' centres (y, x) as fractions of the image's height and width
 * (libs/fl-core tile-bags.ts). Output [b, D]: the class token's final state.
 *
 *   e      = fourier(pos) = [sin(2^k π y), sin(2^k π x), cos(2^k π y), cos(2^k π x)]
 *            (k = 0 … F-1 within each group, F = positionFrequencies; 4F values)
 *   tokens = h·mask + e W_pos + b_pos                                         [b, T, D]
 *   x      = [cls; tokens]                                                   [b, T+1, D]
 *   `layers` pre-norm blocks:
 *     x = x + Dropout(MHSA(LN1(x)))      keys masked: padding gets attention exactly 0
 *     x = x + Dropout(FFN(LN2(x)))       FFN = Dense(ffUnits, gelu|relu) → Dense(D)
 *   out    = LN_final(x[:, 0])
 *
 * Padding never reaches the output: the padded tiles' features are zeroed, their attention as keys
 * is 0 exactly (masked softmax renormalised over the real keys), and every other operation is per
 * token. The last block only computes what the class token needs (its query, its residual, its
 * FFN): the same output, about half the work for one block.
 *
 * Weights (tfjs prefixes them with the layer's name, `<layer>/…`), in this order:
 *   pos_kernel [4F, D], pos_bias [D], cls [D],
 *   per block i: block{i}_ln1_gamma, block{i}_ln1_beta, block{i}_q_kernel, block{i}_q_bias,
 *     block{i}_k_kernel, block{i}_k_bias, block{i}_v_kernel, block{i}_v_bias, block{i}_o_kernel,
 *     block{i}_o_bias, block{i}_ln2_gamma, block{i}_ln2_beta, block{i}_ff1_kernel [D, ffUnits],
 *     block{i}_ff1_bias, block{i}_ff2_kernel [ffUnits, D], block{i}_ff2_bias,
 *   final_ln_gamma, final_ln_beta.
 * Initializers, seeded with seed + 0, 1, 2, … in this order: pos_kernel, cls, then per block the
 * q, k, v, o, ff1, ff2 kernels (Glorot-uniform; cls N(0, 1) as in TransMIL: a small cls token would
 * make LN1's gradient on it ~1/std). Biases and LN offsets 0, LN scales 1. The same seed gives the
 * same weights in any process (tfjs's seeded generators, not the global one).
 *
 * Only plain tfjs-core ops (2-D and batched 3-D matMul, softmax, transpose, reshape, mean, rsqrt,
 * erf, sin, cos), whose gradients exist on the cpu and wasm backends.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { ValidationError } from '@histofed/fl-core';

export type TileTransformerActivation = 'gelu' | 'relu';

export interface TileTransformerArgs {
  name?: string;
  trainable?: boolean;
  /** Attention heads; the feature width D must be divisible by it. */
  heads: number;
  /** Encoder blocks: 1 or 2. */
  layers: number;
  /** Hidden width of each block's feed-forward network. */
  ffUnits: number;
  /** Dropout rate in [0, 1) on the attention and FFN outputs, while training only. Default 0. */
  dropout?: number;
  /** Seeds the weight initializers (and the dropout masks). An integer. */
  seed: number;
  /** Frequencies per coordinate of the Fourier position features, 1 … 12. Default 4. */
  positionFrequencies?: number;
  /** The FFN's hidden activation. Default 'gelu' (exact, with erf). */
  activation?: TileTransformerActivation;
}

/** Added to the attention scores of padded keys before the softmax. */
const MASKED_SCORE = -1e9;
const LN_EPSILON = 1e-5;
const MAX_POSITION_FREQUENCIES = 12;
const BLOCK_LIMITS = [1, 2] as const;

interface BlockWeights {
  ln1Gamma: tfl.LayerVariable;
  ln1Beta: tfl.LayerVariable;
  qKernel: tfl.LayerVariable;
  qBias: tfl.LayerVariable;
  kKernel: tfl.LayerVariable;
  kBias: tfl.LayerVariable;
  vKernel: tfl.LayerVariable;
  vBias: tfl.LayerVariable;
  oKernel: tfl.LayerVariable;
  oBias: tfl.LayerVariable;
  ln2Gamma: tfl.LayerVariable;
  ln2Beta: tfl.LayerVariable;
  ff1Kernel: tfl.LayerVariable;
  ff1Bias: tfl.LayerVariable;
  ff2Kernel: tfl.LayerVariable;
  ff2Bias: tfl.LayerVariable;
}

interface Encoded {
  /** [b, D] */
  output: tf.Tensor2D;
  /** The last block's class-token attention, [b, heads, 1, T+1] (index 0: the class token). */
  attention: tf.Tensor4D;
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

function validate(args: TileTransformerArgs): void {
  if (args == null || typeof args !== 'object') throw new ValidationError('TileTransformer: expected an arguments object');
  if (!isInt(args.heads) || args.heads < 1) {
    throw new ValidationError(`TileTransformer heads: expected a positive integer, got ${String(args.heads)}`);
  }
  if (!isInt(args.layers) || !(BLOCK_LIMITS as readonly number[]).includes(args.layers)) {
    throw new ValidationError(`TileTransformer layers: expected 1 or 2, got ${String(args.layers)}`);
  }
  if (!isInt(args.ffUnits) || args.ffUnits < 1) {
    throw new ValidationError(`TileTransformer ffUnits: expected a positive integer, got ${String(args.ffUnits)}`);
  }
  if (args.dropout !== undefined && !(typeof args.dropout === 'number' && args.dropout >= 0 && args.dropout < 1)) {
    throw new ValidationError(`TileTransformer dropout: expected a number in [0, 1), got ${String(args.dropout)}`);
  }
  if (!isInt(args.seed) || !Number.isSafeInteger(args.seed)) {
    throw new ValidationError(`TileTransformer seed: expected an integer, got ${String(args.seed)}`);
  }
  const f = args.positionFrequencies;
  if (f !== undefined && (!isInt(f) || f < 1 || f > MAX_POSITION_FREQUENCIES)) {
    throw new ValidationError(
      `TileTransformer positionFrequencies: expected an integer from 1 to ${MAX_POSITION_FREQUENCIES}, got ${String(f)}`,
    );
  }
  if (args.activation !== undefined && args.activation !== 'gelu' && args.activation !== 'relu') {
    throw new ValidationError(`TileTransformer activation: expected 'gelu' or 'relu', got ${String(args.activation)}`);
  }
}

function shapeText(s: unknown): string {
  return Array.isArray(s) ? `[${s.map((d) => (d == null ? 'null' : String(d))).join(', ')}]` : String(s);
}

/** LayerNorm over the last axis. */
function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const centred = tf.sub(x, tf.mean(x, -1, true));
  const variance = tf.mean(tf.square(centred), -1, true);
  return tf.add(tf.mul(tf.mul(centred, tf.rsqrt(tf.add(variance, LN_EPSILON))), gamma), beta);
}

/** x [rows, in] · kernel [in, out] + bias. */
function dense(x: tf.Tensor2D, kernel: tfl.LayerVariable, bias: tfl.LayerVariable): tf.Tensor2D {
  return tf.add(tf.matMul(x, kernel.read() as tf.Tensor2D), bias.read()) as tf.Tensor2D;
}

/** Exact GELU: x/2 · (1 + erf(x/√2)). */
function gelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
}

export class TileTransformer extends tfl.layers.Layer {
  static readonly className = 'HistoFedTileTransformer';
  readonly heads: number;
  readonly numLayers: number;
  readonly ffUnits: number;
  readonly dropout: number;
  readonly seed: number;
  readonly positionFrequencies: number;
  readonly activation: TileTransformerActivation;
  private posKernel!: tfl.LayerVariable;
  private posBias!: tfl.LayerVariable;
  private cls!: tfl.LayerVariable;
  private blocks: BlockWeights[] = [];
  private finalGamma!: tfl.LayerVariable;
  private finalBeta!: tfl.LayerVariable;
  /** Counts dropout draws, so each training call gets fresh masks, reproducibly from `seed`. */
  private dropoutDraws = 0;

  constructor(args: TileTransformerArgs) {
    validate(args);
    super({ name: args.name, trainable: args.trainable });
    this.heads = args.heads;
    this.numLayers = args.layers;
    this.ffUnits = args.ffUnits;
    this.dropout = args.dropout ?? 0;
    this.seed = args.seed;
    this.positionFrequencies = args.positionFrequencies ?? 4;
    this.activation = args.activation ?? 'gelu';
  }

  override build(inputShape: tfl.Shape | tfl.Shape[]): void {
    const [hShape] = this.checkShapes(inputShape);
    const d = hShape[2] as number;
    if (d % this.heads !== 0) {
      throw new ValidationError(`TileTransformer heads: the feature width ${d} must be divisible by heads, got heads = ${this.heads}`);
    }
    let next = 0;
    const glorot = () => tfl.initializers.glorotUniform({ seed: this.seed + next++ });
    const zeros = () => tfl.initializers.zeros();
    const ones = () => tfl.initializers.ones();
    const f = this.positionFrequencies;
    this.posKernel = this.addWeight('pos_kernel', [4 * f, d], 'float32', glorot(), undefined, true);
    this.posBias = this.addWeight('pos_bias', [d], 'float32', zeros(), undefined, true);
    this.cls = this.addWeight(
      'cls',
      [d],
      'float32',
      tfl.initializers.randomNormal({ mean: 0, stddev: 1, seed: this.seed + next++ }),
      undefined,
      true,
    );
    this.blocks = [];
    for (let i = 0; i < this.numLayers; i++) {
      const w = (name: string, shape: number[], init: ReturnType<typeof tfl.initializers.zeros>) =>
        this.addWeight(`block${i}_${name}`, shape, 'float32', init, undefined, true);
      this.blocks.push({
        ln1Gamma: w('ln1_gamma', [d], ones()),
        ln1Beta: w('ln1_beta', [d], zeros()),
        qKernel: w('q_kernel', [d, d], glorot()),
        qBias: w('q_bias', [d], zeros()),
        kKernel: w('k_kernel', [d, d], glorot()),
        kBias: w('k_bias', [d], zeros()),
        vKernel: w('v_kernel', [d, d], glorot()),
        vBias: w('v_bias', [d], zeros()),
        oKernel: w('o_kernel', [d, d], glorot()),
        oBias: w('o_bias', [d], zeros()),
        ln2Gamma: w('ln2_gamma', [d], ones()),
        ln2Beta: w('ln2_beta', [d], zeros()),
        ff1Kernel: w('ff1_kernel', [d, this.ffUnits], glorot()),
        ff1Bias: w('ff1_bias', [this.ffUnits], zeros()),
        ff2Kernel: w('ff2_kernel', [this.ffUnits, d], glorot()),
        ff2Bias: w('ff2_bias', [d], zeros()),
      });
    }
    this.finalGamma = this.addWeight('final_ln_gamma', [d], 'float32', ones(), undefined, true);
    this.finalBeta = this.addWeight('final_ln_beta', [d], 'float32', zeros(), undefined, true);
    this.built = true;
  }

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape {
    const [hShape] = this.checkShapes(inputShape);
    return [hShape[0], hShape[2]];
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor {
    return tf.tidy(() => {
      const [h, mask, pos] = this.checkInputs(inputs);
      return this.encode(h, mask, pos, kwargs?.['training'] === true).output;
    });
  }

  /**
   * The class token's attention over the tiles in the last block, averaged over the heads,
   * without its attention to itself and renormalised over the real tiles: [b, T], exactly 0 on
   * padding, summing to 1 per bag (all 0 for a bag without tiles). Inference mode (no dropout).
   * The layer must have been built (called once, or part of a built model).
   */
  tileAttention(inputs: [tf.Tensor, tf.Tensor, tf.Tensor]): tf.Tensor2D {
    if (!this.built) {
      throw new ValidationError(`TileTransformer ${this.name}: tileAttention needs a built layer (apply it, or build its model, first)`);
    }
    return tf.tidy(() => {
      const [h, mask, pos] = this.checkInputs(inputs);
      const [b, t] = h.shape;
      const { attention } = this.encode(h, mask, pos, false);
      const perTile = tf.slice(tf.reshape(tf.mean(attention, 1), [b, t + 1]), [0, 1], [b, t]);
      const masked = tf.mul(perTile, tf.reshape(mask, [b, t]));
      return tf.divNoNan(masked, tf.sum(masked, 1, true)) as tf.Tensor2D;
    });
  }

  /**
   * Multiply-adds of one bag of `tiles` tiles of width `d` (describeModel): the position projection,
   * then per block the q/k/v/o projections, scores and weighted sums, and the feed-forward layers
   * over the tiles and the class token (an upper bound for the last block, which updates the class
   * token only).
   */
  multiplyAdds(tiles: number, d: number): number {
    const n = tiles + 1;
    const block = 4 * n * d * d + 2 * n * n * d + 2 * n * d * this.ffUnits;
    return tiles * 4 * this.positionFrequencies * d + this.numLayers * block;
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      heads: this.heads,
      layers: this.numLayers,
      ffUnits: this.ffUnits,
      dropout: this.dropout,
      seed: this.seed,
      positionFrequencies: this.positionFrequencies,
      activation: this.activation,
    };
  }

  override getClassName(): string {
    return TileTransformer.className;
  }

  private checkShapes(inputShape: tfl.Shape | tfl.Shape[]): [tfl.Shape, tfl.Shape, tfl.Shape] {
    const shapes = inputShape as tfl.Shape[];
    if (!Array.isArray(shapes) || shapes.length !== 3 || !shapes.every((s) => Array.isArray(s))) {
      throw new ValidationError(`TileTransformer ${this.name} inputs: expected [h, mask, pos], got ${shapeText(inputShape)}`);
    }
    const [hs, ms, ps] = shapes;
    if (hs.length !== 3 || hs[2] == null) {
      throw new ValidationError(`TileTransformer ${this.name} h: expected shape [b, T, D] with D known, got ${shapeText(hs)}`);
    }
    if (ms.length !== 3 || (ms[2] != null && ms[2] !== 1)) {
      throw new ValidationError(`TileTransformer ${this.name} mask: expected shape [b, T, 1], got ${shapeText(ms)}`);
    }
    if (ps.length !== 3 || (ps[2] != null && ps[2] !== 2)) {
      throw new ValidationError(`TileTransformer ${this.name} pos: expected shape [b, T, 2], got ${shapeText(ps)}`);
    }
    for (const [label, s] of [['mask', ms], ['pos', ps]] as const) {
      if (hs[1] != null && s[1] != null && s[1] !== hs[1]) {
        throw new ValidationError(`TileTransformer ${this.name} ${label}: expected ${hs[1]} tiles like h, got ${shapeText(s)}`);
      }
    }
    return [hs, ms, ps];
  }

  private checkInputs(inputs: tf.Tensor | tf.Tensor[]): [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D] {
    if (!Array.isArray(inputs) || inputs.length !== 3) {
      throw new ValidationError(`TileTransformer ${this.name} inputs: expected [h, mask, pos]`);
    }
    const [h, mask, pos] = inputs;
    this.checkShapes([h.shape, mask.shape, pos.shape]);
    const [b, t] = h.shape;
    if (mask.shape[0] !== b || pos.shape[0] !== b || mask.shape[1] !== t || pos.shape[1] !== t) {
      throw new ValidationError(
        `TileTransformer ${this.name} inputs: expected h, mask and pos with the same [b, T], got ${shapeText(h.shape)}, ${shapeText(mask.shape)}, ${shapeText(pos.shape)}`,
      );
    }
    const d = this.cls.shape[0] as number;
    if (h.shape[2] !== d) {
      throw new ValidationError(`TileTransformer ${this.name} h: expected ${d} features per tile, got ${shapeText(h.shape)}`);
    }
    return [h as tf.Tensor3D, mask as tf.Tensor3D, pos as tf.Tensor3D];
  }

  /** [b, T, 2] → [b·T, 4F]: sin of (y, x)·2^k·π for k < F, then cos of the same. */
  private fourier(pos: tf.Tensor3D): tf.Tensor2D {
    const [b, t] = pos.shape;
    const f = this.positionFrequencies;
    const freqs = tf.tensor1d(Array.from({ length: f }, (_, k) => 2 ** k * Math.PI));
    const angles = tf.reshape(tf.mul(tf.reshape(pos, [b * t, 2, 1]), freqs), [b * t, 2 * f]);
    return tf.concat([tf.sin(angles), tf.cos(angles)], 1) as tf.Tensor2D;
  }

  private maybeDropout(x: tf.Tensor, training: boolean): tf.Tensor {
    if (!training || this.dropout === 0) return x;
    return tf.dropout(x, this.dropout, undefined, this.seed * 1_000_003 + 7919 * ++this.dropoutDraws);
  }

  private encode(h: tf.Tensor3D, mask: tf.Tensor3D, pos: tf.Tensor3D, training: boolean): Encoded {
    const [b, t, d] = h.shape;
    const n = t + 1;
    const posEmbedding = tf.reshape(dense(this.fourier(pos), this.posKernel, this.posBias), [b, t, d]);
    const tokens = tf.add(tf.mul(h, mask), posEmbedding);
    const cls = tf.add(tf.zeros([b, 1, d]), tf.reshape(this.cls.read(), [1, 1, d]));
    let x: tf.Tensor3D = tf.concat([cls, tokens], 1) as tf.Tensor3D;
    const keyMask = tf.reshape(tf.concat([tf.ones([b, 1]), tf.reshape(mask, [b, t])], 1), [b, 1, 1, n]);
    const keyBias = tf.mul(tf.sub(1, keyMask), MASKED_SCORE);
    let attention: tf.Tensor4D | undefined;
    for (let i = 0; i < this.blocks.length; i++) {
      const out = this.block(x, this.blocks[i], keyMask, keyBias, i === this.blocks.length - 1, training);
      x = out.x;
      attention = out.attention;
    }
    const state = tf.reshape(x, [b, d]); // the last block keeps only the class token
    const output = layerNorm(state, this.finalGamma.read(), this.finalBeta.read()) as tf.Tensor2D;
    return { output, attention: attention as tf.Tensor4D };
  }

  /**
   * One pre-norm block on x [b, n, D]. With `clsOnly` only the class token (index 0) is updated:
   * returns [b, 1, D]; else [b, n, D]. attention: [b, heads, queries, n].
   */
  private block(
    x: tf.Tensor3D,
    w: BlockWeights,
    keyMask: tf.Tensor,
    keyBias: tf.Tensor,
    clsOnly: boolean,
    training: boolean,
  ): { x: tf.Tensor3D; attention: tf.Tensor4D } {
    const [b, n, d] = x.shape;
    const heads = this.heads;
    const dh = d / heads;
    const nq = clsOnly ? 1 : n;
    const y = tf.reshape(layerNorm(x, w.ln1Gamma.read(), w.ln1Beta.read()), [b * n, d]) as tf.Tensor2D;
    const yq = clsOnly ? (tf.reshape(tf.slice(tf.reshape(y, [b, n, d]), [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D) : y;
    const xq = clsOnly ? (tf.slice(x, [0, 0, 0], [b, 1, d]) as tf.Tensor3D) : x;
    // [rows·tokens, D] → [b·heads, tokens, dh]
    const split = (z: tf.Tensor2D, tokens: number): tf.Tensor3D =>
      tf.reshape(tf.transpose(tf.reshape(z, [b, tokens, heads, dh]), [0, 2, 1, 3]), [b * heads, tokens, dh]);
    const q = split(dense(yq, w.qKernel, w.qBias), nq);
    const k = split(dense(y, w.kKernel, w.kBias), n);
    const v = split(dense(y, w.vKernel, w.vBias), n);
    const scores = tf.reshape(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dh)), [b, heads, nq, n]);
    // Masked softmax, renormalised over the real keys: padded keys get exactly 0.
    const soft = tf.mul(tf.softmax(tf.add(scores, keyBias)), keyMask);
    const attention = tf.div(soft, tf.sum(soft, -1, true)) as tf.Tensor4D;
    const context = tf.matMul(tf.reshape(attention, [b * heads, nq, n]) as tf.Tensor3D, v);
    const merged = tf.reshape(tf.transpose(tf.reshape(context, [b, heads, nq, dh]), [0, 2, 1, 3]), [b * nq, d]) as tf.Tensor2D;
    const attended = this.maybeDropout(tf.reshape(dense(merged, w.oKernel, w.oBias), [b, nq, d]), training);
    const x1 = tf.add(xq, attended);
    const z = tf.reshape(layerNorm(x1, w.ln2Gamma.read(), w.ln2Beta.read()), [b * nq, d]) as tf.Tensor2D;
    const hidden = dense(z, w.ff1Kernel, w.ff1Bias);
    const activated = (this.activation === 'gelu' ? gelu(hidden) : tf.relu(hidden)) as tf.Tensor2D;
    const ff = this.maybeDropout(tf.reshape(dense(activated, w.ff2Kernel, w.ff2Bias), [b, nq, d]), training);
    return { x: tf.add(x1, ff) as tf.Tensor3D, attention };
  }
}

tf.serialization.registerClass(TileTransformer);
