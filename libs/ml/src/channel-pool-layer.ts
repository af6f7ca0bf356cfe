/**
 * `ChannelPool`: the input of CBAM's spatial attention. For a [b, h, w, c] input it outputs
 * [b, h, w, 2]: the mean and the maximum over the channels of each pixel. Registered with tfjs's
 * serialization, so saved attention models load again (`tfl.loadLayersModel`).
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

export class ChannelPool extends tfl.layers.Layer {
  static readonly className = 'HistoFedChannelPool';

  constructor(args?: { name?: string; trainable?: boolean }) {
    super(args ?? {});
  }

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tfl.Shape;
    return [...s.slice(0, -1), 2];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      return tf.concat([tf.mean(x, -1, true), tf.max(x, -1, true)], -1);
    });
  }

  override getClassName(): string {
    return ChannelPool.className;
  }
}

tf.serialization.registerClass(ChannelPool);
