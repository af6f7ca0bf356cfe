import { ValidationError, WeightLayoutError } from './errors';
import { decodeWeights, encodeWeights, sha256Hex } from './weights-codec';
import { assertSameLayout, findNonFinite, l2Distance, namedTensor, parameterCount } from './weights';

const sample = () => [
  namedTensor('conv/kernel', [2, 1, 1, 3], [1, 2, 3, 4, 5, 6]),
  namedTensor('conv/bias', [3], [-1.5, 0, 7.25]),
];

describe('weights codec', () => {
  it('round-trips names, shapes and exact float32 values', () => {
    const w = sample();
    const decoded = decodeWeights(encodeWeights(w));
    expect(decoded.map((t) => t.name)).toEqual(['conv/kernel', 'conv/bias']);
    expect(decoded[0].shape).toEqual([2, 1, 1, 3]);
    expect(Array.from(decoded[1].values)).toEqual([-1.5, 0, 7.25]);
    expect(parameterCount(decoded)).toBe(9);
  });

  it('decodes a blob that sits at an odd byte offset', () => {
    const bytes = encodeWeights(sample());
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const decoded = decodeWeights(shifted.subarray(1));
    expect(Array.from(decoded[0].values)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('costs 4 bytes per parameter plus a small header', () => {
    const big = [namedTensor('w', [1000], new Float32Array(1000))];
    const size = encodeWeights(big).length;
    expect(size).toBeGreaterThanOrEqual(4000);
    expect(size).toBeLessThan(4100);
  });

  it('rejects truncated blobs and foreign bytes with a reason', () => {
    const bytes = encodeWeights(sample());
    expect(() => decodeWeights(bytes.subarray(0, bytes.length - 4), 'update from site-a')).toThrow(
      /update from site-a: header announces 9 float32 values/,
    );
    expect(() => decodeWeights(Buffer.from('PNG....'))).toThrow(ValidationError);
  });

  it('hashes content, not identity', () => {
    expect(sha256Hex(encodeWeights(sample()))).toBe(sha256Hex(encodeWeights(sample())));
    const other = sample();
    other[1].values[0] = 2;
    expect(sha256Hex(encodeWeights(other))).not.toBe(sha256Hex(encodeWeights(sample())));
  });
});

describe('weight helpers', () => {
  it('names the tensor whose shape differs', () => {
    const a = sample();
    const b = [a[0], namedTensor('conv/bias', [4], [0, 0, 0, 0])];
    expect(() => assertSameLayout(a, b, 'update')).toThrow(WeightLayoutError);
    expect(() => assertSameLayout(a, b, 'update')).toThrow(/"conv\/bias" should have shape \[3\], got \[4\]/);
  });

  it('finds non-finite values and measures distances', () => {
    const a = sample();
    const b = sample();
    b[1].values[1] = 3;
    expect(l2Distance(a, b)).toBeCloseTo(3, 6);
    b[0].values[4] = NaN;
    expect(findNonFinite(b)).toEqual({ tensor: 'conv/kernel', index: 4 });
    expect(findNonFinite(a)).toBeNull();
  });

  it('finds the first non-finite value of every kind anywhere, also in the last values of a tensor', () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (const length of [1, 3, 4, 7, 1001]) {
        for (const index of [0, length - 1, length >> 1]) {
          const values = Float32Array.from({ length }, (_, i) => (i % 3) - 1.5);
          values[index] = bad;
          const weights = [namedTensor('ok', [5], [-0, 0, 1e-45, -3.4e38, 3.4e38]), namedTensor('t', [length], values)];
          expect(findNonFinite(weights)).toEqual({ tensor: 't', index: Math.min(index, length - 1) });
          if (index > 0) values[0] = bad;
          expect(findNonFinite(weights)).toEqual({ tensor: 't', index: 0 });
        }
      }
    }
  });

  it('refuses a value count that does not match the shape', () => {
    expect(() => namedTensor('x', [2, 2], [1, 2, 3])).toThrow(/needs 4 values, got 3/);
  });
});
