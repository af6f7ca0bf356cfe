/**
 * Contrastive pretraining in feature space (issue 19): a small trainable encoder — the *adapter*,
 * dense ReLU layers — on top of a frozen backbone's feature vectors (e.g. the ImageNet MobileNetV2's
 * 384 tile features), with SimCLR's projection head (`proj1` ReLU, `proj2`) for NT-Xent.
 *
 * Where the full backbone cannot be trained (CPU sites: a MobileNetV2 step per 224 px tile is far
 * beyond a federated round's budget), the adapter is what self-supervision can afford to train: the
 * features come from the feature cache, a step costs a few small matrix products. Positive pairs are
 * two different augmented tiles of the same image (two rows of its cached grid/view features), so
 * the adapter learns what the tiles of one image share. An input dropout (active in training only)
 * adds feature-space noise to each view.
 *
 * Layers are named (`adapter_dropout`, `adapter1`, `adapter2`, ..., `proj1`, `proj2`) so weight
 * names are the same in every process, as federated averaging needs; `encoder` and `projector`
 * share the adapter layers, so `getWeights(encoder)` is the pretrained adapter a classifier starts
 * from.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { ValidationError } from '@histofed/fl-core';
import { ntXentLoss } from './nt-xent';

export interface FeatureAdapterOptions {
  /** Widths of the adapter's dense ReLU layers (default [256, 128]); the last one is the representation. */
  readonly units?: readonly number[];
  /** Projection head: hidden width (default 128) and output width (default 64). */
  readonly hidden?: number;
  readonly dim?: number;
  /** Dropout on the input features in training (feature-space augmentation; default 0.1). */
  readonly inputDropout?: number;
}

export interface FeatureAdapter {
  /** Features -> representation (the adapter layers; owns their weights). */
  readonly encoder: tfl.LayersModel;
  /** Features -> projection (the encoder, then the projection head). */
  readonly projector: tfl.LayersModel;
  /** The representation's width. */
  readonly width: number;
}

/** Builds an adapter for `inputDim` features, initialised from `seed` (glorot-uniform kernels, zero biases). */
export function buildFeatureAdapter(inputDim: number, seed = 1, o: FeatureAdapterOptions = {}): FeatureAdapter {
  const units = o.units ?? [256, 128];
  const hidden = o.hidden ?? 128;
  const dim = o.dim ?? 64;
  const dropout = o.inputDropout ?? 0.1;
  if (!Number.isInteger(inputDim) || inputDim < 1) throw new ValidationError(`buildFeatureAdapter: inputDim must be a positive integer, got ${inputDim}`);
  if (units.length === 0 || units.some((u) => !Number.isInteger(u) || u < 1)) throw new ValidationError(`buildFeatureAdapter: units must be positive integers, got [${units.join(', ')}]`);
  if (!(dropout >= 0 && dropout < 1)) throw new ValidationError(`buildFeatureAdapter: inputDropout must be in [0, 1), got ${dropout}`);
  const init = (k: number) => tfl.initializers.glorotUniform({ seed: seed + 7000 + k });
  const input = tfl.input({ shape: [inputDim], name: 'adapter_input' });
  let h = tfl.layers.dropout({ name: 'adapter_dropout', rate: dropout, seed: seed + 7100 }).apply(input) as tfl.SymbolicTensor;
  units.forEach((u, i) => {
    h = tfl.layers.dense({ name: `adapter${i + 1}`, units: u, activation: 'relu', kernelInitializer: init(i), biasInitializer: 'zeros' }).apply(h) as tfl.SymbolicTensor;
  });
  const encoder = tfl.model({ name: 'feature_adapter', inputs: input, outputs: h });
  const p = tfl.layers.dense({ name: 'proj1', units: hidden, activation: 'relu', kernelInitializer: init(50), biasInitializer: 'zeros' }).apply(h) as tfl.SymbolicTensor;
  const z = tfl.layers.dense({ name: 'proj2', units: dim, kernelInitializer: init(51), biasInitializer: 'zeros' }).apply(p) as tfl.SymbolicTensor;
  return { encoder, projector: tfl.model({ name: 'feature_adapter_contrastive', inputs: input, outputs: z }), width: units[units.length - 1] };
}

/**
 * One Adam step of NT-Xent on two views' features (`a`, `b`: [n, inputDim], row i of each a view of
 * image i); returns the loss before the step. The adapter's and the projection head's weights move.
 */
export function featureContrastiveStep(adapter: FeatureAdapter, optimizer: tf.Optimizer, a: tf.Tensor2D, b: tf.Tensor2D, tau = 0.5): number {
  const loss = optimizer.minimize(
    () => ntXentLoss(adapter.projector.apply(a, { training: true }) as tf.Tensor2D, adapter.projector.apply(b, { training: true }) as tf.Tensor2D, tau),
    true,
    adapter.projector.trainableWeights.map((w) => w.read() as tf.Variable),
  );
  const value = (loss as tf.Scalar).dataSync()[0];
  loss?.dispose();
  return value;
}

/** The representation of `features` ([n, inputDim]) as a flat [n, width] array (inference: no dropout). */
export function adapterFeatures(adapter: FeatureAdapter, features: Float32Array, count: number, batchSize = 512): Float32Array {
  const d = features.length / Math.max(1, count);
  const out = new Float32Array(count * adapter.width);
  for (let s = 0; s < count; s += batchSize) {
    const n = Math.min(count, s + batchSize) - s;
    const y = tf.tidy(() => adapter.encoder.predict(tf.tensor2d(features.subarray(s * d, (s + n) * d), [n, d])) as tf.Tensor2D);
    out.set(y.dataSync(), s * adapter.width);
    y.dispose();
  }
  return out;
}

/** Disposes the adapter (the projection head with the projector, the adapter layers with the encoder). */
export function disposeFeatureAdapter(adapter: FeatureAdapter): void {
  for (const l of adapter.projector.layers) if (l.name === 'proj1' || l.name === 'proj2') l.dispose();
  adapter.encoder.dispose();
}
