/**
 * Local contrastive training of a federated pretrain round (issue 19), tensors kept inside: a
 * spec's contrastive model (encoder + projection head) and its Adam optimizer, stepped on batches
 * of view pairs given as plain pixels. The site's round (apps/site-client site-pretraining.ts)
 * draws the views and owns the loop; this owns every tensor (dispose() frees them).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec, NamedTensor, WeightSet } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { getWeights, setWeights } from '../weights-bridge';
import { ContrastiveModel, buildContrastiveModel, contrastiveStep, disposeContrastiveModel } from './contrastive-model';

export class ContrastiveTrainer {
  private readonly model: ContrastiveModel;
  private readonly optimizer: tf.Optimizer;

  /** A fresh model (weights from `seed`) with the projection head of widths `dim` / `hidden`, and Adam at `learningRate`. */
  constructor(
    private readonly spec: ModelSpec,
    seed: number,
    dim: number,
    hidden: number,
    learningRate: number,
  ) {
    this.model = buildContrastiveModel(spec, seed, dim, hidden);
    this.optimizer = tf.train.adam(learningRate);
  }

  /** Writes a contrastive model's weights (the round's global model: encoder + projection head; layout checked). */
  load(weights: WeightSet): void {
    setWeights(this.model.projector, weights);
  }

  /** The current weights (encoder + projection head), in the model's order. */
  weights(): NamedTensor[] {
    return getWeights(this.model.projector);
  }

  /**
   * One NT-Xent step at temperature `tau` on `count` pairs of views, each view `cropSize` px square
   * RGB in [0, 1] (back to back in `a` and `b`), resized to the model's input size when they differ.
   * Returns the batch's loss before the step.
   */
  step(a: Float32Array, b: Float32Array, count: number, cropSize: number, tau: number): number {
    const per = cropSize * cropSize * 3;
    if (a.length !== count * per || b.length !== count * per) {
      throw new ValidationError(`contrastive step: ${count} views of ${cropSize} px need ${count * per} values each, got ${a.length} and ${b.length}`);
    }
    const size = this.spec.imageSize;
    const input = (pixels: Float32Array) =>
      tf.tidy(() => {
        const t = tf.tensor4d(pixels, [count, cropSize, cropSize, 3]);
        return cropSize === size ? t : (tf.image.resizeBilinear(t, [size, size]) as tf.Tensor4D);
      });
    const ta = input(a);
    const tb = input(b);
    try {
      return contrastiveStep(this.model, this.optimizer, ta, tb, tau);
    } finally {
      tf.dispose([ta, tb]);
    }
  }

  dispose(): void {
    this.optimizer.dispose();
    disposeContrastiveModel(this.model);
  }
}
