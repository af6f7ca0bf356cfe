/**
 * Messages between the training pool (parallel-training.ts, main thread) and its workers
 * (training-worker.ts). Types only: both sides import them with `import type`.
 *
 * Every request carries an `id`; the worker answers each with exactly one reply of the same id,
 * either the result or `{ type: 'error' }`. A worker handles its messages one after the other.
 */
import type { MemoryInfo } from '@tensorflow/tfjs-core';
import type { BackboneSpec, ModelSpec, NamedTensor, WeightSet } from '@histofed/fl-core';
import type { BackendChoice, SelectedBackend } from './backend';

/** `workerData` of a training worker. */
export interface TrainingWorkerData {
  /** Marks a HistoFed training worker (the worker module does nothing without it). */
  readonly histofedTrainingWorker: true;
  /** 0-based index in the pool, for messages. */
  readonly index: number;
  readonly backend: BackendChoice;
  /** Absolute path of the worker module (.ts under ts-node/Jest, .js when compiled). */
  readonly file: string;
  /** Absolute path of the TypeScript loader (scripts/register-ts.js, or ts-node), when `file` is TypeScript. */
  readonly tsNode?: string;
}

export type ToWorker =
  /** Starts a training call: (re)builds the replica if the spec changed, loads the initial weights, a fresh Adam. */
  | {
      readonly type: 'begin';
      readonly id: number;
      readonly spec: ModelSpec;
      readonly initial: WeightSet;
      /** All images of the call, backed by a SharedArrayBuffer (never copied per step). */
      readonly images: Float32Array;
      readonly labels: Int32Array;
      /** Subtype targets (two-stage models). */
      readonly subtypes?: Int32Array;
      readonly learningRate: number;
      readonly proximalMu: number;
      readonly globalWeights?: WeightSet;
      readonly classWeights?: readonly number[];
      readonly subtypeWeights?: readonly number[];
      /** One loss weight per row of `images` (indexed like `labels`, so it follows its row into any shard). */
      readonly sampleWeights?: Float32Array;
      /** Where a 'layers-model' backbone lives (fine-tuning specs build their top blocks from it). */
      readonly backboneDir?: string;
    }
  /** Gradients of this shard's cross-entropy, scaled by shard size / batch size. */
  | { readonly type: 'grad'; readonly id: number; readonly indices: Int32Array; readonly batchSize: number }
  /** Applies the summed data gradients (plus the local FedProx gradient) with Adam. */
  | { readonly type: 'apply'; readonly id: number; readonly grads: Float32Array }
  /** End of an epoch: the non-trainable weights (batch-norm moving statistics) and a finiteness check. */
  | { readonly type: 'epochEnd'; readonly id: number }
  /** Overwrites the non-trainable weights (their average over the workers). */
  | { readonly type: 'setStats'; readonly id: number; readonly stats: Float32Array }
  | { readonly type: 'weights'; readonly id: number }
  | { readonly type: 'memory'; readonly id: number }
  /** Loads (once) the frozen part of a backbone for tiles of `size` px; answers its id and row shape. */
  | { readonly type: 'featureInfo'; readonly id: number; readonly backbone: BackboneSpec; readonly size: number; readonly dir?: string }
  /** Feature rows of `count` tiles (transferred). */
  | {
      readonly type: 'features';
      readonly id: number;
      readonly backbone: BackboneSpec;
      readonly size: number;
      readonly dir?: string;
      readonly tiles: Float32Array;
      readonly count: number;
    }
  /** Ends the call: disposes the optimizer and the global-weight tensors, drops the images. */
  | { readonly type: 'end'; readonly id: number };

export type FromWorker =
  | { readonly type: 'ready'; readonly backend: SelectedBackend }
  /** Failure of a request (`id`) or of the start-up (no `id`). */
  | {
      readonly type: 'error';
      readonly id?: number;
      readonly code?: string;
      readonly name: string;
      readonly message: string;
      readonly stack?: string;
    }
  | { readonly type: 'ok'; readonly id: number }
  /** `grads` is null for an empty shard (a last batch smaller than the worker count). */
  | { readonly type: 'grad'; readonly id: number; readonly loss: number; readonly grads: Float32Array | null }
  | { readonly type: 'epochEnd'; readonly id: number; readonly stats: Float32Array | null; readonly nonFinite: string | null }
  | { readonly type: 'weights'; readonly id: number; readonly weights: NamedTensor[] }
  | { readonly type: 'memory'; readonly id: number; readonly memory: MemoryInfo }
  | { readonly type: 'featureInfo'; readonly id: number; readonly extractorId: string; readonly rowShape: readonly number[] }
  | { readonly type: 'features'; readonly id: number; readonly rows: Float32Array };
