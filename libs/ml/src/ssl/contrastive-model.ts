/**
 * A compact CNN set up for contrastive pretraining (issue 19): the classifier of a spec (its conv
 * blocks, SE gates, pooling: the layers a classification run trains) with a projection head on its
 * pooled features instead of the classification heads — `proj1` (ReLU) and `proj2` (SimCLR's MLP
 * head). The encoder's layers ARE the classifier's (shared weights): after pretraining,
 * `getWeights(classifier)` is a classification model whose conv blocks start pretrained (heads as
 * initialised), with the weight names every run uses.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { buildModel } from '../models';
import { ntXentLoss } from './nt-xent';

/** The layer whose output (global average pooling of the last conv block) the projection head reads. */
export const ENCODER_OUTPUT_LAYER = 'gap';

export interface ContrastiveModel {
  /** The classification model of the spec (owns every weight; dispose this one). */
  readonly classifier: tfl.LayersModel;
  /** Image -> projection (shares the classifier's conv layers, owns the projection head). */
  readonly projector: tfl.LayersModel;
}

/** Builds a spec's classifier and its projector (projection width `dim`, hidden width `hidden`). */
export function buildContrastiveModel(spec: ModelSpec, seed = 1, dim = 64, hidden = 128): ContrastiveModel {
  if (spec.backbone !== undefined) throw new ValidationError('model.backbone: contrastive pretraining of a backbone model is not built; use a compact CNN kind (se-cnn, attention-cnn, small-cnn)');
  const classifier = buildModel(spec, seed);
  try {
    const pooled = classifier.getLayer(ENCODER_OUTPUT_LAYER).output as tfl.SymbolicTensor;
    const init = (k: number) => tfl.initializers.glorotUniform({ seed: seed + 5000 + k });
    const h = tfl.layers.dense({ name: 'proj1', units: hidden, activation: 'relu', kernelInitializer: init(1), biasInitializer: 'zeros' }).apply(pooled) as tfl.SymbolicTensor;
    const z = tfl.layers.dense({ name: 'proj2', units: dim, kernelInitializer: init(2), biasInitializer: 'zeros' }).apply(h) as tfl.SymbolicTensor;
    return { classifier, projector: tfl.model({ name: 'contrastive', inputs: classifier.inputs, outputs: z }) };
  } catch (e) {
    classifier.dispose();
    throw e;
  }
}

/**
 * One Adam step of NT-Xent on a batch of pairs (`a`, `b`: [n, s, s, 3] as the views of n tiles);
 * returns the loss before the step. The projector's trainable weights (the encoder's and the head's) move.
 */
export function contrastiveStep(model: ContrastiveModel, optimizer: tf.Optimizer, a: tf.Tensor4D, b: tf.Tensor4D, tau = 0.5): number {
  const loss = optimizer.minimize(
    () => ntXentLoss(model.projector.apply(a, { training: true }) as tf.Tensor2D, model.projector.apply(b, { training: true }) as tf.Tensor2D, tau),
    true,
    model.projector.trainableWeights.map((w) => w.read() as tf.Variable),
  );
  const value = (loss as tf.Scalar).dataSync()[0];
  loss?.dispose();
  return value;
}

/** Disposes both models (the projection head's weights with the projector, everything else with the classifier). */
export function disposeContrastiveModel(model: ContrastiveModel): void {
  for (const l of model.projector.layers) if (l.name === 'proj1' || l.name === 'proj2') l.dispose();
  model.classifier.dispose();
}
