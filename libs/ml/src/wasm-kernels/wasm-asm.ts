/**
 * A small WebAssembly assembler: builds a module of functions over an imported memory ("env",
 * "memory") from expression trees, so that HistoFed's SIMD kernels are readable TypeScript (see
 * simd-kernels.ts) instead of a binary blob. It covers what those kernels use: i32 arithmetic,
 * f32 and 128-bit SIMD (f32x4) loads, stores and arithmetic, locals, blocks, loops and branches.
 *
 * An expression (or statement) is a function that appends its code to a byte array, its operands'
 * code first: `set(x, f32x4Add(get(x), v128Load(get(p))))` emits local.get p, v128.load,
 * local.get x, f32x4.add... in stack order. Opcodes are those of the WebAssembly 2.0 binary format
 * (SIMD ones after the 0xfd prefix).
 */

/** The WebAssembly JavaScript API, as far as HistoFed uses it (the ES2022 lib does not declare it). */
export interface WebAssemblyApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number }) => { readonly buffer: ArrayBuffer };
}

/** The engine's WebAssembly object, if it has one. */
export const webAssembly = (globalThis as unknown as { WebAssembly?: WebAssemblyApi }).WebAssembly;

export type ValType = 'i32' | 'f32' | 'v128';
const VALTYPE: Record<ValType, number> = { i32: 0x7f, f32: 0x7d, v128: 0x7b };

/** Appends the code of an expression or statement. */
export type Code = (out: number[]) => void;

/** A local (or parameter) of the function being built. */
export interface Local {
  readonly index: number;
  readonly type: ValType;
}

function uleb(out: number[], value: number): void {
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
}

function sleb(out: number[], value: number): void {
  let v = value | 0;
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return;
    }
    out.push(byte | 0x80);
  }
}

/** A name (ASCII only: the kernels' export names). */
function name(out: number[], s: string): void {
  if (!/^[\x20-\x7e]*$/.test(s)) throw new Error(`wasm-asm: name ${JSON.stringify(s)} is not ASCII`);
  uleb(out, s.length);
  for (let i = 0; i < s.length; i++) out.push(s.charCodeAt(i));
}

const op =
  (...bytes: number[]): ((...args: Code[]) => Code) =>
  (...args: Code[]) =>
  (out) => {
    for (const a of args) a(out);
    out.push(...bytes);
  };

const simd = (code: number): ((...args: Code[]) => Code) => {
  const bytes = [0xfd];
  uleb(bytes, code);
  return op(...bytes);
};

/** Memory access: the address expression, a constant byte offset, log2 of the alignment hint. */
const mem =
  (prefix: number[], align: number) =>
  (addr: Code, offset = 0, ...values: Code[]): Code =>
  (out) => {
    addr(out);
    for (const v of values) v(out);
    out.push(...prefix);
    uleb(out, align);
    uleb(out, offset);
  };

const simdPrefix = (code: number): number[] => {
  const bytes = [0xfd];
  uleb(bytes, code);
  return bytes;
};

// ---- locals and constants
export const get =
  (l: Local): Code =>
  (out) => {
    out.push(0x20);
    uleb(out, l.index);
  };
export const set =
  (l: Local, value: Code): Code =>
  (out) => {
    value(out);
    out.push(0x21);
    uleb(out, l.index);
  };
export const i32 =
  (v: number): Code =>
  (out) => {
    out.push(0x41);
    sleb(out, v);
  };
export const f32 =
  (v: number): Code =>
  (out) => {
    out.push(0x43);
    for (const b of new Uint8Array(new Float32Array([v]).buffer)) out.push(b);
  };

// ---- i32
export const add = op(0x6a);
export const sub = op(0x6b);
export const mul = op(0x6c);
export const shl = op(0x74);
export const and = op(0x71);
export const or = op(0x72);
export const ltS = op(0x48);
export const gtS = op(0x4a);
export const geS = op(0x4e);
export const ltU = op(0x49);
export const geU = op(0x4f);
export const eq = op(0x46);
export const ne = op(0x47);
/** select(a, b, cond): cond ? a : b (for any value type) */
export const select = op(0x1b);
/** Signed minimum and maximum (a and b are evaluated twice: pass locals or constants). */
export const minS = (a: Code, b: Code): Code => select(a, b, ltS(a, b));
export const maxS = (a: Code, b: Code): Code => select(a, b, gtS(a, b));
/** local += delta */
export const inc = (l: Local, delta: Code): Code => set(l, add(get(l), delta));

// ---- memory, i32
export const i32Load = mem([0x28], 2);
export const i32Store = (addr: Code, value: Code, offset = 0): Code => mem([0x36], 2)(addr, offset, value);

// ---- f32 (scalar)
/** f32 inequality, an i32 0 or 1 (1 for NaN operands). */
export const f32Ne = op(0x5c);
export const f32Load = mem([0x2a], 2);
export const f32Store = (addr: Code, value: Code, offset = 0): Code => mem([0x38], 2)(addr, offset, value);
export const f32Add = op(0x92);
export const f32Mul = op(0x94);

// ---- v128 / f32x4
export const v128Load = mem(simdPrefix(0x00), 4);
/** Loads one f32 and splats it to the four lanes. */
export const load32Splat = mem(simdPrefix(0x09), 2);
export const v128Store = (addr: Code, value: Code, offset = 0): Code => mem(simdPrefix(0x0b), 4)(addr, offset, value);
/** Bytes of a and b (lanes 0-15 and 16-31) picked by the 16 constant lane indices. */
export const i8x16Shuffle =
  (a: Code, b: Code, lanes: readonly number[]): Code =>
  (out) => {
    if (lanes.length !== 16 || lanes.some((l) => !(l >= 0 && l < 32))) throw new Error('wasm-asm: bad shuffle lanes');
    a(out);
    b(out);
    out.push(0xfd);
    uleb(out, 0x0d);
    out.push(...lanes);
  };
/** Stores 64-bit lane `lane` (0-1) of a v128 at addr + offset. */
export const v128Store64Lane =
  (addr: Code, value: Code, lane: number, offset = 0): Code =>
  (out) => {
    addr(out);
    value(out);
    out.push(0xfd);
    uleb(out, 0x5b);
    uleb(out, 3);
    uleb(out, offset);
    out.push(lane);
  };
export const i32x4Splat = simd(0x11);
export const f32x4Splat = simd(0x13);
/** The f32 in lane `lane` (0-3) of a v128. */
export const f32x4ExtractLane =
  (v: Code, lane: number): Code =>
  (out) => {
    v(out);
    out.push(0xfd);
    uleb(out, 0x1f);
    out.push(lane);
  };
/** The i32 in lane `lane` (0-3) of a v128. */
export const i32x4ExtractLane =
  (v: Code, lane: number): Code =>
  (out) => {
    v(out);
    out.push(0xfd);
    uleb(out, 0x1b);
    out.push(lane);
  };
export const i32x4Eq = simd(0x37);
/** Lanes all ones where a != b (and where either is NaN), else zeros. */
export const f32x4Ne = simd(0x42);
export const f32x4Gt = simd(0x44);
export const v128And = simd(0x4e);
export const v128Or = simd(0x50);
/** andnot(a, b): a & ~b */
export const v128AndNot = simd(0x4f);
/** bitselect(a, b, mask): bits of a where mask is 1, of b where 0. */
export const bitselect = simd(0x52);
export const i32x4Add = simd(0xae);
export const f32x4Add = simd(0xe4);
export const f32x4Mul = simd(0xe6);

// ---- control
const BLOCK_VOID = 0x40;
export const block =
  (...body: Code[]): Code =>
  (out) => {
    out.push(0x02, BLOCK_VOID);
    for (const s of body) s(out);
    out.push(0x0b);
  };
export const loop =
  (...body: Code[]): Code =>
  (out) => {
    out.push(0x03, BLOCK_VOID);
    for (const s of body) s(out);
    out.push(0x0b);
  };
export const br =
  (depth: number): Code =>
  (out) => {
    out.push(0x0c);
    uleb(out, depth);
  };
export const brIf =
  (depth: number, cond: Code): Code =>
  (out) => {
    cond(out);
    out.push(0x0d);
    uleb(out, depth);
  };

/**
 * for (i = start; i < end; i += step) body (unsigned comparison), as
 * block { loop { br_if 1 (i >= end); body; i += step; br 0 } }. The body must not branch.
 */
export const forLoop = (i: Local, start: Code, end: Code, step: Code, ...body: Code[]): Code =>
  block(set(i, start), loop(brIf(1, geU(get(i), end)), ...body, inc(i, step), br(0)));

/** for (i = start; i < end; i++) body, signed comparison. The body must not branch. */
export const forLoopSigned = (i: Local, start: Code, end: Code, ...body: Code[]): Code =>
  block(set(i, start), loop(brIf(1, geS(get(i), end)), ...body, inc(i, i32(1)), br(0)));

export const seq =
  (...body: Code[]): Code =>
  (out) => {
    for (const s of body) s(out);
  };

/** Builds one function: declares its parameters, lets `body` declare locals and emit code. */
export class FunctionBuilder {
  private readonly locals: ValType[] = [];
  readonly params: Local[];

  constructor(
    readonly exportName: string,
    readonly paramTypes: readonly ValType[],
  ) {
    this.params = paramTypes.map((type, index) => ({ index, type }));
  }

  local(type: ValType): Local {
    const l = { index: this.paramTypes.length + this.locals.length, type };
    this.locals.push(type);
    return l;
  }

  encode(body: readonly Code[]): number[] {
    const out: number[] = [];
    uleb(out, this.locals.length);
    for (const t of this.locals) {
      uleb(out, 1);
      out.push(VALTYPE[t]);
    }
    for (const s of body) s(out);
    out.push(0x0b);
    return out;
  }
}

export interface FunctionDef {
  readonly builder: FunctionBuilder;
  readonly body: readonly Code[];
}

/** The module: one exported function per def (no results), memory imported as env.memory. */
export function assembleModule(defs: readonly FunctionDef[]): Uint8Array {
  const section = (id: number, content: number[], out: number[]) => {
    out.push(id);
    uleb(out, content.length);
    for (const b of content) out.push(b);
  };
  const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

  const types: number[] = [];
  uleb(types, defs.length);
  for (const d of defs) {
    types.push(0x60);
    uleb(types, d.builder.paramTypes.length);
    for (const t of d.builder.paramTypes) types.push(VALTYPE[t]);
    uleb(types, 0);
  }
  section(1, types, out);

  const imports: number[] = [];
  uleb(imports, 1);
  name(imports, 'env');
  name(imports, 'memory');
  imports.push(0x02, 0x00);
  uleb(imports, 0);
  section(2, imports, out);

  const funcs: number[] = [];
  uleb(funcs, defs.length);
  defs.forEach((_d, i) => uleb(funcs, i));
  section(3, funcs, out);

  const exported: number[] = [];
  uleb(exported, defs.length);
  defs.forEach((d, i) => {
    name(exported, d.builder.exportName);
    exported.push(0x00);
    uleb(exported, i);
  });
  section(7, exported, out);

  const code: number[] = [];
  uleb(code, defs.length);
  for (const d of defs) {
    const body = d.builder.encode(d.body);
    uleb(code, body.length);
    for (const b of body) code.push(b);
  }
  section(10, code, out);
  return Uint8Array.from(out);
}
