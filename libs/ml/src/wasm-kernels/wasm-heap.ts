/**
 * What HistoFed's wasm training kernels use of `@tensorflow/tfjs-backend-wasm` 4.22's BackendWasm:
 * its own kernels (called on TensorInfos, without tf ops or engine bookkeeping), output allocation
 * and the wasm heap, which JavaScript loops read and write directly.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';

/** The parts of BackendWasm these kernels use. */
export interface WasmBackend extends KernelBackend {
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): tf.TypedArray;
  readonly wasm: { readonly HEAPU8: Uint8Array };
  readonly dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
}

/** Arguments of a kernel function, as the engine passes them. */
export type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** Runs the wasm backend's own kernel `name`. */
export function runWasmKernel(
  name: string,
  backend: KernelBackend,
  inputs: Record<string, TensorInfo>,
  attrs: NamedAttrMap,
): TensorInfo {
  const config = tf.getKernel(name, 'wasm');
  if (config === undefined) throw new Error(`wasm backend has no ${name} kernel`);
  const out = config.kernelFunc({ inputs, backend, attrs });
  if (Array.isArray(out)) throw new Error(`wasm ${name} kernel returned several outputs`);
  return out as TensorInfo;
}

/** Runs `body`, then frees every TensorInfo it pushed to `temps` (the result must not be one). */
export function withTemps<T>(backend: KernelBackend, body: (temps: TensorInfo[]) => T): T {
  const temps: TensorInfo[] = [];
  try {
    return body(temps);
  } finally {
    for (const t of temps) backend.disposeData(t.dataId);
  }
}

/**
 * The whole wasm heap as floats. Any allocation (makeOutput, a wasm kernel) may grow the heap and
 * detach earlier views, so take a new one after allocating.
 */
export function heapF32(backend: WasmBackend): Float32Array {
  return new Float32Array(backend.wasm.HEAPU8.buffer);
}

/** Index in `heapF32` of the first element of a float32 tensor. */
export function floatOffset(backend: WasmBackend, t: TensorInfo): number {
  const data = backend.dataIdMap.get(t.dataId);
  if (data === undefined) throw new Error('wasm tensor data not found (disposed?)');
  if (data.memoryOffset % 4 !== 0) throw new Error('wasm tensor data is not 4-byte aligned');
  return data.memoryOffset / 4;
}
