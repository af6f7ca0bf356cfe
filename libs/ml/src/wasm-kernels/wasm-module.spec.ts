import * as A from './wasm-asm';
import type { WasmBackend } from './wasm-heap';
import { type WasmFn, wasmModule } from './wasm-module';

function webAssembly(): A.WebAssemblyApi {
  if (A.webAssembly === undefined) throw new Error('no WebAssembly');
  return A.webAssembly;
}

/** add_one(p): the float at byte address p += 1. */
function addOne(): A.FunctionDef {
  const f = new A.FunctionBuilder('add_one', ['i32']);
  const [p] = f.params;
  return { builder: f, body: [A.f32Store(A.get(p), A.f32Add(A.f32Load(A.get(p)), A.f32(1)))] };
}

/** A wasm backend as far as wasmModule looks at it: its memory (or not). */
function backendWith(memory: unknown): WasmBackend {
  return { wasm: { HEAPU8: new Uint8Array(0), asm: memory === undefined ? undefined : { memory } } } as unknown as WasmBackend;
}

/** A module of add_one, counting how often it is assembled and bound. */
function counted(enabled: () => boolean = () => true) {
  const counts = { built: 0, bound: 0 };
  const kernelsOn = wasmModule(
    {
      name: 'test kernels',
      functions: () => {
        counts.built++;
        return [addOne()];
      },
      bind: (fn) => {
        counts.bound++;
        return { addOne: fn('add_one') };
      },
    },
    enabled,
  );
  return { counts, kernelsOn };
}

describe('wasmModule', () => {
  it('instantiates the module on the backend memory, once per memory, assembling it once', () => {
    const wasm = webAssembly();
    const { counts, kernelsOn } = counted();
    const memory = new wasm.Memory({ initial: 1 });
    const k = kernelsOn(backendWith(memory));
    if (k === null) throw new Error('no kernels');
    new Float32Array(memory.buffer)[2] = 41;
    k.addOne(8);
    expect(new Float32Array(memory.buffer)[2]).toBe(42);
    expect(kernelsOn(backendWith(memory))).toBe(k);
    const other = kernelsOn(backendWith(new wasm.Memory({ initial: 1 })));
    expect(other).not.toBeNull();
    expect(other).not.toBe(k);
    expect(counts).toEqual({ built: 1, bound: 2 });
  });

  it('is null when turned off (without assembling), without a memory, or when the module does not assemble', () => {
    const wasm = webAssembly();
    let on = false;
    const { counts, kernelsOn } = counted(() => on);
    const memory = new wasm.Memory({ initial: 1 });
    expect(kernelsOn(backendWith(memory))).toBeNull();
    expect(counts.built).toBe(0);
    on = true;
    expect(kernelsOn(backendWith(memory))).not.toBeNull();
    expect(kernelsOn(backendWith(undefined))).toBeNull();
    expect(kernelsOn(backendWith({ buffer: new ArrayBuffer(65536) }))).toBeNull(); // not a WebAssembly.Memory

    let built = 0;
    const broken = wasmModule(
      {
        name: 'broken',
        functions: () => {
          built++;
          throw new Error('cannot assemble');
        },
        bind: () => ({}),
      },
      () => true,
    );
    expect(broken(backendWith(memory))).toBeNull();
    expect(broken(backendWith(memory))).toBeNull();
    expect(built).toBe(1); // the failure is remembered
  });

  it('remembers a failed instantiation for that memory', () => {
    const wasm = webAssembly();
    const { counts, kernelsOn } = counted();
    // a shared memory does not satisfy the module's (unshared) memory import
    const SharedMemory = wasm.Memory as unknown as new (d: object) => object;
    const shared = new SharedMemory({ initial: 1, maximum: 1, shared: true });
    expect(kernelsOn(backendWith(shared))).toBeNull();
    expect(kernelsOn(backendWith(shared))).toBeNull();
    expect(counts).toEqual({ built: 1, bound: 0 });
    expect(kernelsOn(backendWith(new wasm.Memory({ initial: 1 })))).not.toBeNull();
  });

  it('names an export the module lacks', () => {
    const kernelsOn = wasmModule<WasmFn>({ name: 'test kernels', functions: () => [addOne()], bind: (fn) => fn('add_two') }, () => true);
    expect(() => kernelsOn(backendWith(new (webAssembly().Memory)({ initial: 1 })))).toThrow('test kernels: add_two is missing');
  });
});
