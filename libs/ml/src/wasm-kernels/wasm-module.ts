/**
 * How HistoFed's WebAssembly modules (simd-kernels.ts, and the kernels of clip-gradient.ts,
 * relu-gradient.ts, scale-shift.ts, pointwise-conv.ts and depthwise-conv2d-backprop.ts) get onto
 * the tfjs wasm backend: each module is assembled (wasm-asm.ts), validated and compiled once, at
 * first use, then instantiated on the wasm backend's WebAssembly.Memory — imported as ("env",
 * "memory"), so that its functions read and write tensors in place, given byte addresses — once per
 * memory, and its exported functions bound by name.
 *
 * Not every tfjs-backend-wasm build exposes its memory, and not every engine has WebAssembly (or
 * WebAssembly SIMD, which these modules use): where the module cannot be assembled, validated or
 * instantiated, or the memory is not there, the kernels are null and callers use their fallbacks.
 */
import * as A from './wasm-asm';
import type { WasmBackend } from './wasm-heap';

/** An exported function of a module: byte addresses and counts (i32), sometimes f32 values. */
export type WasmFn = (...args: number[]) => void;

/** One of HistoFed's modules: its functions, and the kernels bound from an instance's exports. */
export interface WasmModuleSpec<K> {
  /** For the error naming a missing export, e.g. 'HistoFed SIMD kernels'. */
  readonly name: string;
  /** The module's functions (built and assembled at first use). */
  functions(): A.FunctionDef[];
  /** The kernels, from the instance's exported functions (`fn` throws for a name it lacks). */
  bind(fn: (name: string) => WasmFn): K;
}

const wasmApi = A.webAssembly;

/** The wasm backend's WebAssembly.Memory, or null where this build (or the engine) has none. */
function backendMemory(backend: WasmBackend): object | null {
  if (wasmApi === undefined) return null;
  const memory = (backend.wasm as { asm?: { memory?: unknown } }).asm?.memory;
  return memory instanceof wasmApi.Memory ? memory : null;
}

/**
 * The accessor of a module's kernels: `kernelsOn(backend)` is the module instantiated on
 * `backend`'s memory (cached per memory), or null when `enabled(backend)` is false, or there is no
 * WebAssembly or no memory, or the module does not assemble, validate or instantiate there (a
 * failed instantiation is remembered for that memory).
 */
export function wasmModule<K>(
  spec: WasmModuleSpec<K>,
  enabled: (backend: WasmBackend) => boolean,
): (backend: WasmBackend) => K | null {
  let compiled: object | null | undefined;
  /** The kernels per wasm memory (null: instantiation failed there). */
  const instances = new WeakMap<object, K | null>();

  const compile = (): object | null => {
    if (compiled !== undefined) return compiled;
    try {
      const bytes = A.assembleModule(spec.functions());
      compiled = wasmApi !== undefined && wasmApi.validate(bytes) ? new wasmApi.Module(bytes) : null;
    } catch {
      compiled = null;
    }
    return compiled;
  };

  return (backend) => {
    if (!enabled(backend) || wasmApi === undefined) return null;
    const memory = backendMemory(backend);
    if (memory === null) return null;
    const cached = instances.get(memory);
    if (cached !== undefined) return cached;
    const mod = compile();
    if (mod === null) return null;
    // (not named `exports`: the CommonJS output refers to this module's exports by that name)
    let functions: Record<string, unknown>;
    try {
      functions = new wasmApi.Instance(mod, { env: { memory } }).exports;
    } catch {
      instances.set(memory, null);
      return null;
    }
    const kernels = spec.bind((name) => {
      const f = functions[name];
      if (typeof f !== 'function') throw new Error(`${spec.name}: ${name} is missing`);
      return f as WasmFn;
    });
    instances.set(memory, kernels);
    return kernels;
  };
}
