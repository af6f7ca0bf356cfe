import { WeightLayoutError } from './errors';

/** One named tensor of a model, as plain float32 values in row-major order. */
export interface NamedTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly values: Float32Array;
}

/** A model's weights: an ordered list of named tensors. No tfjs types, so every lib can use it. */
export type WeightSet = readonly NamedTensor[];

/** The name and shape of one tensor, without values. */
export interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
}

export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Total number of parameters in a weight set. */
export function parameterCount(weights: WeightSet): number {
  return weights.reduce((n, t) => n + t.values.length, 0);
}

export function layoutOf(weights: WeightSet): TensorSpec[] {
  return weights.map((t) => ({ name: t.name, shape: [...t.shape] }));
}

/** Builds a tensor, checking that the value count matches the shape. */
export function namedTensor(name: string, shape: readonly number[], values: Float32Array | number[]): NamedTensor {
  const v = values instanceof Float32Array ? values : Float32Array.from(values);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new WeightLayoutError(`tensor "${name}": shape [${shape.join(', ')}] must hold non-negative integers`);
  }
  if (v.length !== shapeSize(shape)) {
    throw new WeightLayoutError(
      `tensor "${name}": shape [${shape.join(', ')}] needs ${shapeSize(shape)} values, got ${v.length}`,
    );
  }
  return { name, shape: [...shape], values: v };
}

/**
 * Throws a WeightLayoutError naming the first difference when `actual` does not have the
 * layout (names, order, shapes) of `expected`.
 */
export function assertSameLayout(expected: readonly TensorSpec[], actual: readonly TensorSpec[], what = 'weights'): void {
  if (expected.length !== actual.length) {
    throw new WeightLayoutError(`${what}: expected ${expected.length} tensors, got ${actual.length}`);
  }
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i];
    const a = actual[i];
    if (e.name !== a.name) {
      throw new WeightLayoutError(`${what}: tensor ${i} should be "${e.name}", got "${a.name}"`);
    }
    if (e.shape.length !== a.shape.length || e.shape.some((d, j) => d !== a.shape[j])) {
      throw new WeightLayoutError(
        `${what}: tensor "${e.name}" should have shape [${e.shape.join(', ')}], got [${a.shape.join(', ')}]`,
      );
    }
  }
}

export function cloneWeights(weights: WeightSet): NamedTensor[] {
  return weights.map((t) => ({ name: t.name, shape: [...t.shape], values: new Float32Array(t.values) }));
}

/** Index of the first non-finite value, with the tensor's name, or null when all are finite. */
export function findNonFinite(weights: WeightSet): { tensor: string; index: number } | null {
  for (const t of weights) {
    if (allFinite(t.values)) continue;
    for (let i = 0; i < t.values.length; i++) {
      if (!Number.isFinite(t.values[i])) return { tensor: t.name, index: i };
    }
  }
  return null;
}

/**
 * x * 0 is 0 for finite x and NaN for infinities and NaN, so a sum of them is NaN exactly when a
 * value is not finite: a branch-free pass with four independent sums (checked on every
 * incoming update, 5 M values each).
 */
function allFinite(v: Float32Array): boolean {
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  const n = v.length - (v.length % 4);
  let i = 0;
  for (; i < n; i += 4) {
    a += v[i] * 0;
    b += v[i + 1] * 0;
    c += v[i + 2] * 0;
    d += v[i + 3] * 0;
  }
  for (; i < v.length; i++) a += v[i] * 0;
  return a + b + c + d === 0;
}

/** Euclidean norm of `a - b` over every tensor (the size of an update). */
export function l2Distance(a: WeightSet, b: WeightSet): number {
  assertSameLayout(layoutOf(a), layoutOf(b));
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i].values;
    const y = b[i].values;
    for (let j = 0; j < x.length; j++) {
      const d = x[j] - y[j];
      s += d * d;
    }
  }
  return Math.sqrt(s);
}

/** Largest absolute difference between two weight sets of the same layout. */
export function maxAbsDifference(a: WeightSet, b: WeightSet): number {
  assertSameLayout(layoutOf(a), layoutOf(b));
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i].values;
    const y = b[i].values;
    for (let j = 0; j < x.length; j++) m = Math.max(m, Math.abs(x[j] - y[j]));
  }
  return m;
}
