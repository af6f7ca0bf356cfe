import * as A from './wasm-asm';

/** Instantiates `defs` on a fresh one-page memory. */
function instantiate(defs: A.FunctionDef[]) {
  const wasm = A.webAssembly;
  if (wasm === undefined) throw new Error('no WebAssembly');
  const bytes = A.assembleModule(defs);
  expect(wasm.validate(bytes)).toBe(true);
  const memory = new wasm.Memory({ initial: 1 });
  const instance = new wasm.Instance(new wasm.Module(bytes), { env: { memory } });
  return { fns: instance.exports as Record<string, (...args: number[]) => void>, f32: new Float32Array(memory.buffer) };
}

describe('wasm-asm', () => {
  it('encodes constants, offsets, locals and loops that compute what they say', () => {
    // fill(p, n, v): p[i] = v + i for i < n, with signed and multi-byte LEB128 constants on the way
    const f = new A.FunctionBuilder('fill', ['i32', 'i32']);
    const [p, n] = f.params;
    const i = f.local('i32');
    const acc = f.local('f32');
    const body = [
      A.set(acc, A.f32(0.5)),
      A.forLoop(
        i,
        A.i32(0),
        A.get(n),
        A.i32(1),
        // address p + 4 i, as (p + 4 i - 70000) + (70000 - 300) and an offset of 300 (the effective
        // address, i32 + offset, does not wrap: p + 4 i - 300 must not be negative)
        A.f32Store(A.add(A.sub(A.add(A.get(p), A.shl(A.get(i), A.i32(2))), A.i32(70000)), A.i32(70000 - 300)), A.get(acc), 300),
        A.set(acc, A.f32Add(A.get(acc), A.f32(1))),
      ),
    ];
    // splat4(src, dst): dst[0..3] = src[0] * 2 (f32x4), then dst[4..7] = max-like select of lanes
    const g = new A.FunctionBuilder('splat4', ['i32', 'i32']);
    const [src, dst] = g.params;
    const v = g.local('v128');
    const gBody = [
      A.set(v, A.load32Splat(A.get(src))),
      A.v128Store(A.get(dst), A.f32x4Mul(A.get(v), A.f32x4Splat(A.f32(2)))),
      // lanes of src[0..3] greater than 1.5 keep their value, others become -1
      A.v128Store(
        A.get(dst),
        A.bitselect(A.v128Load(A.get(src)), A.f32x4Splat(A.f32(-1)), A.f32x4Gt(A.v128Load(A.get(src)), A.f32x4Splat(A.f32(1.5)))),
        16,
      ),
    ];
    const { fns, f32 } = instantiate([
      { builder: f, body },
      { builder: g, body: gBody },
    ]);
    fns.fill(512, 5);
    expect(Array.from(f32.subarray(128, 134))).toEqual([0.5, 1.5, 2.5, 3.5, 4.5, 0]);
    fns.splat4(512, 1024);
    expect(Array.from(f32.subarray(256, 264))).toEqual([1, 1, 1, 1, -1, -1, 2.5, 3.5]);
  });

  it('counts signed loops down from negative starts and takes minima and maxima', () => {
    const f = new A.FunctionBuilder('count', ['i32', 'i32', 'i32']);
    const [out, from, to] = f.params;
    const i = f.local('i32');
    const acc = f.local('f32');
    const body = [
      A.set(acc, A.f32(0)),
      A.forLoopSigned(i, A.maxS(A.get(from), A.i32(-2)), A.minS(A.get(to), A.i32(3)), A.set(acc, A.f32Add(A.get(acc), A.f32(1)))),
      A.f32Store(A.get(out), A.get(acc)),
    ];
    const { fns, f32 } = instantiate([{ builder: f, body }]);
    fns.count(0, -10, 10); // i from -2 to 2
    expect(f32[0]).toBe(5);
    fns.count(0, 1, 2);
    expect(f32[0]).toBe(1);
    fns.count(0, 2, -5);
    expect(f32[0]).toBe(0);
  });
});
