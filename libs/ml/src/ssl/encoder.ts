/**
 * The encoder of a compact CNN (issue 19, federated pretraining): the part of the model a
 * contrastive pretraining run trains and a classification run starts from — every tensor of the
 * layers up to the pooled features (`gap`: centring, conv blocks, batch norm, SE gates, spatial
 * attention), i.e. everything except the classification heads (`fc1`, `fc1_bn`, `head`,
 * `subtype_head`) and the projection head (`proj1`, `proj2`). One definition, used by the
 * coordinator (the encoder a pretrain run records, a classification run's initial model) and by
 * the sites (the check of the model a classification run starts from).
 *
 * The encoder's hash is the SHA-256 of `encodeWeights(encoderWeights(spec, weights))` — the
 * content address under which the coordinator's store keeps the encoder blob — with the tensors in
 * the model's weight order (trainable, then the batch-norm moving statistics).
 */
import type { ModelSpec, NamedTensor, WeightSet } from '@histofed/fl-core';
import { ValidationError, encodeWeights, sha256Hex } from '@histofed/fl-core';
import { modelOptionsOf } from '../models';
import { getWeights } from '../weights-bridge';
import { buildContrastiveModel, disposeContrastiveModel } from './contrastive-model';

/** The kinds with an encoder a contrastive run can pretrain (not the backbone and bag models). */
export const PRETRAINABLE_KINDS: readonly string[] = Object.freeze(['small-cnn', 'se-cnn', 'attention-cnn']);

/** Layers after the pooled features: the classification heads (models.ts attachHeads) and the projection head (contrastive-model.ts). */
const NOT_ENCODER_LAYERS: ReadonlySet<string> = new Set(['fc1', 'fc1_bn', 'head', 'subtype_head', 'proj1', 'proj2']);

/** Why `spec` has no encoder a contrastive run can pretrain, or null. */
export function pretrainableProblem(spec: Pick<ModelSpec, 'kind' | 'backbone'>): string | null {
  if (spec.backbone !== undefined || !PRETRAINABLE_KINDS.includes(spec.kind)) {
    return `contrastive pretraining trains the encoder of a compact CNN (${PRETRAINABLE_KINDS.join(', ')}); the model is ${spec.kind}`;
  }
  return null;
}

/** True for the tensor `name` ('conv1/kernel', 'bn2/moving_mean', 'head/bias') of an encoder layer. */
export function isEncoderTensor(name: string): boolean {
  return !NOT_ENCODER_LAYERS.has(name.split('/')[0]);
}

function assertPretrainable(spec: ModelSpec): void {
  const problem = pretrainableProblem(spec);
  if (problem) throw new ValidationError(`model.kind: ${problem}`);
}

/** The encoder tensors of a classifier's or a contrastive (projector) model's weights, in their order. */
export function encoderWeights(spec: ModelSpec, weights: WeightSet): NamedTensor[] {
  assertPretrainable(spec);
  const encoder = weights.filter((t) => isEncoderTensor(t.name));
  if (encoder.length === 0 || !encoder.some((t) => t.name.startsWith('conv1/'))) {
    throw new ValidationError(`encoderWeights: the weights hold no conv encoder of a ${spec.kind} (tensors: ${weights.slice(0, 6).map((t) => t.name).join(', ')}${weights.length > 6 ? ', ...' : ''})`);
  }
  return encoder;
}

/** SHA-256 (hex) of the encoded encoder tensors: the encoder's content address. */
export function encoderHash(spec: ModelSpec, weights: WeightSet): string {
  return sha256Hex(encodeWeights(encoderWeights(spec, weights)));
}

/**
 * `weights` (a fresh classifier's) with its encoder tensors replaced by `encoder`'s. The encoder
 * must have exactly the layout of the weights' encoder part (names, order, shapes); the error
 * names the first difference. Other tensors (the heads) are kept.
 */
export function withEncoder(spec: ModelSpec, weights: WeightSet, encoder: WeightSet): NamedTensor[] {
  const own = encoderWeights(spec, weights);
  if (own.length !== encoder.length) {
    throw new ValidationError(`the pretrained encoder has ${encoder.length} tensors, the ${spec.kind}'s encoder ${own.length}`);
  }
  own.forEach((t, i) => {
    const e = encoder[i];
    if (e.name !== t.name || e.shape.length !== t.shape.length || e.shape.some((d, k) => d !== t.shape[k])) {
      throw new ValidationError(
        `the pretrained encoder's tensor ${i} is ${e.name} [${e.shape.join(', ')}], the ${spec.kind}'s is ${t.name} [${t.shape.join(', ')}]`,
      );
    }
  });
  let next = 0;
  return weights.map((t) => (isEncoderTensor(t.name) ? encoder[next++] : t));
}

/**
 * Why a classification model `spec` cannot start from an encoder pretrained with `pretrained`, or
 * null: the same kind, image size and encoder options (filters, SE units, batch norm, attention
 * kernel, blocks; the heads' denseUnits and dropout may differ).
 */
export function encoderSpecProblem(pretrained: ModelSpec, spec: ModelSpec): string | null {
  const problem = pretrainableProblem(spec);
  if (problem) return problem;
  if (pretrained.kind !== spec.kind) return `the encoder was pretrained as a ${pretrained.kind}, the model is a ${spec.kind}`;
  if (pretrained.imageSize !== spec.imageSize) return `the encoder was pretrained at imageSize ${pretrained.imageSize}, the model's is ${spec.imageSize}`;
  const encoderOptions = (s: ModelSpec) => {
    const o = modelOptionsOf(s);
    return { blocks: o.blocks, filters: [...o.filters], batchNorm: o.batchNorm, ...(s.kind !== 'small-cnn' ? { seUnits: [...o.seUnits] } : {}), ...(s.kind === 'attention-cnn' ? { attentionKernel: o.attentionKernel } : {}) };
  };
  const [a, b] = [JSON.stringify(encoderOptions(pretrained)), JSON.stringify(encoderOptions(spec))];
  if (a !== b) return `the encoder's options ${a} differ from the model's ${b} (only denseUnits and dropout, the heads', may differ)`;
  return null;
}

/** A pretrain run's initial global model: a fresh contrastive model's weights (encoder + projection head), deterministic from the seed. */
export function contrastiveModelWeights(spec: ModelSpec, seed: number, dim: number, hidden: number): NamedTensor[] {
  const model = buildContrastiveModel(spec, seed, dim, hidden);
  try {
    return getWeights(model.projector);
  } finally {
    disposeContrastiveModel(model);
  }
}
