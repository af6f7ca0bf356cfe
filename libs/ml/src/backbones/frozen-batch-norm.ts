/**
 * `FrozenBatchNorm`: batch normalisation that always normalises with its stored moving statistics
 * (inference mode), also while training; its scale (gamma) and offset (beta) train. Fine-tuning
 * the top blocks of a pretrained backbone on a few hundred tiles must not re-estimate ImageNet's
 * statistics from small, site-specific batches (Keras does the same for a BatchNormalization layer
 * set to trainable = false). Registered with tfjs's serialization; saved tile classifiers replace it
 * by a standard BatchNormalization layer with the same weights (tile-classifier.ts), which is what
 * one does at inference anyway.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { channelScaleShift } from '../wasm-training-kernels';

export interface FrozenBatchNormArgs {
  name?: string;
  epsilon?: number;
  trainable?: boolean;
}

export class FrozenBatchNorm extends tfl.layers.Layer {
  static readonly className = 'HistoFedFrozenBatchNorm';
  readonly epsilon: number;
  private gamma!: tfl.LayerVariable;
  private beta!: tfl.LayerVariable;
  private movingMean!: tfl.LayerVariable;
  private movingVariance!: tfl.LayerVariable;

  constructor(args: FrozenBatchNormArgs = {}) {
    super(args);
    this.epsilon = args.epsilon ?? 1e-3;
    this.supportsMasking = true;
  }

  override build(inputShape: tfl.Shape | tfl.Shape[]): void {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tfl.Shape;
    const channels = s[s.length - 1] as number;
    this.gamma = this.addWeight('gamma', [channels], 'float32', tfl.initializers.ones(), undefined, true);
    this.beta = this.addWeight('beta', [channels], 'float32', tfl.initializers.zeros(), undefined, true);
    this.movingMean = this.addWeight('moving_mean', [channels], 'float32', tfl.initializers.zeros(), undefined, false);
    this.movingVariance = this.addWeight('moving_variance', [channels], 'float32', tfl.initializers.ones(), undefined, false);
    this.built = true;
  }

  /**
   * x * scale + shift with per-channel scale = gamma / sqrt(variance + epsilon) and shift = beta -
   * mean * scale: the same values as tf.batchNorm, but a gradient of two broadcast products and
   * sums (tf.batchNorm's gradient tiles its parameters to the input's shape: ~75 % of a
   * fine-tuning step on wasm). `channelScaleShift` is add(mul(x, scale), shift), on wasm one kernel
   * forward and one backward (the same values; wasm-kernels/scale-shift.ts).
   */
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const scale = tf.mul(this.gamma.read(), tf.rsqrt(tf.add(this.movingVariance.read(), this.epsilon)));
      const shift = tf.sub(this.beta.read(), tf.mul(this.movingMean.read(), scale));
      return channelScaleShift(x, scale, shift);
    });
  }

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape | tfl.Shape[] {
    return inputShape;
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), epsilon: this.epsilon };
  }

  override getClassName(): string {
    return FrozenBatchNorm.className;
  }
}

tf.serialization.registerClass(FrozenBatchNorm);
