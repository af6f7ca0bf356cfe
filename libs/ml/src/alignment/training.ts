/**
 * Feature alignment in local training (`TrainOptions.alignment`): every mini-batch's loss gains
 * lambda x alignmentLoss(the batch's penultimate features, training mode) against the round's
 * reference moments. The features come from the same forward pass as the outputs (a model that
 * shares the trained model's layers, see penultimate.ts).
 */
import type * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { ValidationError } from '@histofed/fl-core';
import {
  ALIGNMENT_METHODS,
  alignmentLoss,
  checkAlignmentReferenceOptions,
  prepareAlignmentReference,
  type AlignmentMethod,
  type AlignmentReference,
} from './alignment-loss';
import { validateFeatureMoments, type FeatureMoments } from './feature-moments';
import { penultimateModels } from './penultimate';

export interface AlignmentOptions {
  readonly method: AlignmentMethod;
  /** Weight of the alignment term (>= 0; 0 computes and reports it without training on it). */
  readonly lambda: number;
  /** The round's reference moments (the sites' combined FeatureMoments). */
  readonly reference: FeatureMoments;
  /** MMD: bandwidth multiples of sqrt(2 tr Sigma_ref) (default [0.5, 1, 2]). */
  readonly bandwidthMultiples?: readonly number[];
}

/** Largest lambda accepted (a typo guard). */
export const MAX_ALIGNMENT_LAMBDA = 1e6;

/** Checks alignment options, naming the field (`alignment.lambda`, `alignment.reference.mean[2]`, ...). */
export function checkAlignmentOptions(a: AlignmentOptions, what = 'alignment'): void {
  if (typeof a !== 'object' || a === null) throw new ValidationError(`${what}: must be an object with method, lambda and reference`);
  if (!(ALIGNMENT_METHODS as readonly string[]).includes(a.method)) {
    throw new ValidationError(`${what}.method: must be coral or mmd, got ${String(a.method)}`);
  }
  if (typeof a.lambda !== 'number' || !Number.isFinite(a.lambda) || a.lambda < 0 || a.lambda > MAX_ALIGNMENT_LAMBDA) {
    throw new ValidationError(`${what}.lambda: must be a number in [0, ${MAX_ALIGNMENT_LAMBDA}], got ${String(a.lambda)}`);
  }
  validateFeatureMoments(a.reference, `${what}.reference`);
  if (a.reference.count < 2) throw new ValidationError(`${what}.reference.count: a reference needs at least 2 rows, got ${a.reference.count}`);
  checkAlignmentReferenceOptions({ bandwidthMultiples: a.bandwidthMultiples }, what);
}

/** What trainLocal uses per training call; `dispose()` at the end. */
export interface TrainingAlignment {
  readonly lambda: number;
  /** One training-mode forward pass: the model's output and the batch's penultimate features. */
  forward(x: tf.Tensor): { output: tf.Tensor2D; features: tf.Tensor2D };
  /** The (unweighted) alignment loss of the batch, or null when it is undefined for it (CORAL on a 1-row batch). */
  loss(features: tf.Tensor2D): tf.Scalar | null;
  dispose(): void;
}

/**
 * Prepares alignment for training `model` (checks the options and that the reference's dim is the
 * model's feature width; refuses a model whose heads read its input directly, which alignment
 * could not change).
 */
export function prepareTrainingAlignment(model: tfl.LayersModel, a: AlignmentOptions): TrainingAlignment {
  checkAlignmentOptions(a);
  const fm = penultimateModels(model);
  if (fm.isInput) {
    throw new ValidationError('alignment: the model\'s heads read its input directly (backbone-head with denseUnits 0), so training cannot move the features; use denseUnits > 0');
  }
  if (fm.dim !== a.reference.dim) {
    throw new ValidationError(`alignment.reference.dim: the model's penultimate features have ${fm.dim} values, the reference ${a.reference.dim}`);
  }
  const reference: AlignmentReference = prepareAlignmentReference(a.reference, { methods: [a.method], bandwidthMultiples: a.bandwidthMultiples });
  return {
    lambda: a.lambda,
    forward(x) {
      const [output, features] = fm.training.apply(x, { training: true }) as tf.Tensor[];
      return { output: output as tf.Tensor2D, features: features as tf.Tensor2D };
    },
    loss(features) {
      if (a.method === 'coral' && features.shape[0] < 2) return null;
      return alignmentLoss(features, reference, a.method);
    },
    dispose: () => reference.dispose(),
  };
}
