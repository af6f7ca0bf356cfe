import { WeightLayoutError } from './errors';
import { ModelSpec } from './run-types';
import { NamedTensor, WeightSet } from './weights';

/**
 * Which tensors of a model stay at each site instead of being aggregated (FedBN, Li et al. 2021):
 * - 'none': every tensor is shared (FedAvg and friends as usual);
 * - 'batch-norm': batch-normalization parameters and statistics (gamma, beta, moving mean and
 *   variance) stay local: each site normalizes features with its own statistics (scanner, stain);
 * - 'batch-norm-and-heads': also the classification heads (`head`, `subtype_head`): a personalized
 *   model per site on a shared feature extractor.
 */
export const LOCAL_TENSOR_POLICIES = ['none', 'batch-norm', 'batch-norm-and-heads'] as const;
export type LocalTensorPolicy = (typeof LOCAL_TENSOR_POLICIES)[number];

const BATCH_NORM_VARIABLES = new Set(['gamma', 'beta', 'moving_mean', 'moving_variance']);
const HEAD_LAYERS = new Set(['head', 'subtype_head']);

/** Whether the tensor named `name` (layer-scoped, e.g. 'bn1/gamma', 'head/kernel') stays at the site under `policy`. */
export function isLocalTensor(name: string, policy: LocalTensorPolicy): boolean {
  if (policy === 'none') return false;
  const parts = name.split('/');
  if (BATCH_NORM_VARIABLES.has(parts[parts.length - 1])) return true;
  return policy === 'batch-norm-and-heads' && HEAD_LAYERS.has(parts[0]);
}

/** The tensors of `weights` that stay local under `policy`, in order. */
export function localTensorsOf(weights: WeightSet, policy: LocalTensorPolicy): NamedTensor[] {
  return weights.filter((t) => isLocalTensor(t.name, policy));
}

/**
 * `weights` with its local tensors replaced by those in `local` (matched by name; a tensor of
 * `local` with another shape is an error naming it). Tensors not in `local` are kept.
 */
export function withLocalTensors(weights: WeightSet, local: WeightSet): NamedTensor[] {
  const byName = new Map(local.map((t) => [t.name, t]));
  return weights.map((t) => {
    const own = byName.get(t.name);
    if (!own) return t;
    if (own.shape.length !== t.shape.length || own.shape.some((d, i) => d !== t.shape[i])) {
      throw new WeightLayoutError(`local tensor ${t.name}: shape [${own.shape}] does not match the model's [${t.shape}]`);
    }
    return own;
  });
}

/** Model kinds whose convolutions can be followed by trained batch normalization (options.batchNorm 1). */
const BATCH_NORM_KINDS = new Set(['small-cnn', 'se-cnn', 'attention-cnn']);

/**
 * Why `policy` makes no sense for `spec`, or null: keeping batch-norm tensors local needs a model
 * that trains batch normalization (the CNNs with options.batchNorm 1; a MobileNetV2 backbone's are
 * frozen, and the frozen-backbone heads have none), else every site would keep constants.
 */
export function localTensorPolicyProblem(spec: Pick<ModelSpec, 'kind' | 'options'>, policy: LocalTensorPolicy): string | null {
  if (policy === 'none') return null;
  if (BATCH_NORM_KINDS.has(spec.kind) && spec.options?.['batchNorm'] === 1) return null;
  // A backbone's heads normalize their hidden layer with batchNorm 1 (and denseUnits > 0).
  if (spec.kind === 'backbone-head' && spec.options?.['batchNorm'] === 1 && (spec.options?.['denseUnits'] ?? 0) > 0) return null;
  return `model ${spec.kind} trains no batch normalization, so '${policy}' would keep only constants local: use small-cnn, se-cnn or attention-cnn with options.batchNorm 1, a backbone-head with options.denseUnits and batchNorm 1, or localTensors 'none'`;
}
