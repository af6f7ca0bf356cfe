/**
 * Layers of the bag models (bag-models.ts), registered with tfjs's serialization so that saved
 * models load again:
 *
 * - `TileBagSlice`: one part of a bag row [b, T, F + 3] (fl-core tile-bags.ts): the features
 *   [b, T, F], the mask [b, T, 1] or the positions [b, T, 2].
 * - `GatedAttentionPool`: gated attention-based MIL pooling (Ilse, Tomczak & Welling 2018):
 *
 *     s_k = w^T (tanh(V^T h_k + b_V) ⊙ sigmoid(U^T h_k + b_U))     (V, U: [D, L]; w: [L, 1])
 *     a   = softmax_k(s_k) over the bag's tiles (padding: a_k = 0 exactly)
 *     z   = Σ_k a_k h_k                                            (the bag's embedding, [b, D])
 *
 *   `tileAttention` returns a: which tiles decided.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { BAG_MASK_OFFSET, BAG_SLOT_EXTRA, BAG_Y_OFFSET, ValidationError } from '@histofed/fl-core';

/** Added to the scores of padded slots before a softmax. */
export const MASKED_SCORE = -1e9;

export type BagPart = 'features' | 'mask' | 'positions';

export interface TileBagSliceArgs {
  name?: string;
  part: BagPart;
  /** F: features per tile. */
  features: number;
}

export class TileBagSlice extends tfl.layers.Layer {
  static readonly className = 'HistoFedTileBagSlice';
  readonly part: BagPart;
  readonly features: number;

  constructor(args: TileBagSliceArgs) {
    super({ name: args.name });
    if (!['features', 'mask', 'positions'].includes(args.part)) throw new ValidationError(`TileBagSlice.part: features, mask or positions, got ${args.part}`);
    if (!Number.isInteger(args.features) || args.features < 1) throw new ValidationError(`TileBagSlice.features: a positive integer, got ${args.features}`);
    this.part = args.part;
    this.features = args.features;
  }

  private range(): [number, number] {
    const f = this.features;
    if (this.part === 'features') return [0, f];
    if (this.part === 'mask') return [f + BAG_MASK_OFFSET, 1];
    return [f + BAG_Y_OFFSET, 2];
  }

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tfl.Shape;
    if (s.length !== 3 || s[2] !== this.features + BAG_SLOT_EXTRA) {
      throw new ValidationError(`${this.name}: bag rows [tiles, ${this.features} + ${BAG_SLOT_EXTRA}] expected, got [${s.slice(1).join(', ')}]`);
    }
    return [s[0], s[1], this.range()[1]];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor3D;
      const [begin, size] = this.range();
      return tf.slice(x, [0, 0, begin], [-1, -1, size]);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), part: this.part, features: this.features };
  }

  override getClassName(): string {
    return TileBagSlice.className;
  }
}

export interface GatedAttentionPoolArgs {
  name?: string;
  /** L: units of the attention network. */
  units: number;
  /** Seeds the kernels' Glorot initialisation (the same seed: the same weights in every process). */
  seed: number;
}

export class GatedAttentionPool extends tfl.layers.Layer {
  static readonly className = 'HistoFedGatedAttentionPool';
  readonly units: number;
  readonly seed: number;
  private vKernel!: tfl.LayerVariable;
  private vBias!: tfl.LayerVariable;
  private uKernel!: tfl.LayerVariable;
  private uBias!: tfl.LayerVariable;
  private wKernel!: tfl.LayerVariable;

  constructor(args: GatedAttentionPoolArgs) {
    super({ name: args.name });
    if (!Number.isInteger(args.units) || args.units < 1 || args.units > 4096) {
      throw new ValidationError(`model.options.attentionUnits: must be an integer in [1, 4096], got ${args.units}`);
    }
    this.units = args.units;
    this.seed = args.seed;
  }

  override build(inputShape: tfl.Shape | tfl.Shape[]): void {
    const h = (inputShape as tfl.Shape[])[0];
    const d = h[h.length - 1] as number;
    const L = this.units;
    const glorot = (k: number) => tfl.initializers.glorotUniform({ seed: this.seed + k });
    this.vKernel = this.addWeight('v_kernel', [d, L], 'float32', glorot(0));
    this.vBias = this.addWeight('v_bias', [L], 'float32', tfl.initializers.zeros());
    this.uKernel = this.addWeight('u_kernel', [d, L], 'float32', glorot(1));
    this.uBias = this.addWeight('u_bias', [L], 'float32', tfl.initializers.zeros());
    this.wKernel = this.addWeight('w_kernel', [L, 1], 'float32', glorot(2));
    this.built = true;
  }

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape {
    const h = (inputShape as tfl.Shape[])[0];
    return [h[0], h[h.length - 1]];
  }

  /** a [b, T]: each tile's weight, summing to 1 over the bag's tiles, 0 on padding. */
  tileAttention(inputs: tf.Tensor[]): tf.Tensor2D {
    return tf.tidy(() => {
      const [h, mask] = inputs as [tf.Tensor3D, tf.Tensor3D];
      const [b, t, d] = h.shape;
      const flat = tf.reshape(h, [b * t, d]) as tf.Tensor2D;
      const dense = (k: tfl.LayerVariable, bias: tfl.LayerVariable) => tf.add(tf.matMul(flat, k.read() as tf.Tensor2D), bias.read());
      const gated = tf.mul(tf.tanh(dense(this.vKernel, this.vBias)), tf.sigmoid(dense(this.uKernel, this.uBias))) as tf.Tensor2D;
      const scores = tf.reshape(tf.matMul(gated, this.wKernel.read() as tf.Tensor2D), [b, t]);
      const m = tf.reshape(mask, [b, t]);
      const soft = tf.mul(tf.softmax(tf.add(scores, tf.mul(tf.sub(1, m), MASKED_SCORE)), -1), m);
      // Renormalized after masking: padding holds exactly 0 and the tiles sum to 1.
      return tf.div(soft, tf.maximum(tf.sum(soft, -1, true), 1e-30)) as tf.Tensor2D;
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const list = inputs as tf.Tensor[];
      const h = list[0] as tf.Tensor3D;
      const [b, t, d] = h.shape;
      const a = this.tileAttention(list);
      return tf.reshape(tf.matMul(tf.reshape(a, [b, 1, t]) as tf.Tensor3D, h), [b, d]);
    });
  }

  /** Multiply-adds of one bag of `tiles` tiles of `d` values. */
  multiplyAdds(tiles: number, d: number): number {
    return tiles * (2 * d * this.units + this.units + d);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), units: this.units, seed: this.seed };
  }

  override getClassName(): string {
    return GatedAttentionPool.className;
  }
}

tf.serialization.registerClass(TileBagSlice);
tf.serialization.registerClass(GatedAttentionPool);
