import { fractionBitsFor } from './params';
import { dequantize, quantizationErrorBound, quantize } from './ring';

describe('fixed-point ring encoding', () => {
  it('fractionBitsFor picks the largest f with clipRange * 2^f <= 2^30', () => {
    expect(fractionBitsFor(1)).toBe(30);
    expect(fractionBitsFor(2)).toBe(29);
    expect(fractionBitsFor(3)).toBe(28);
    expect(fractionBitsFor(0.1)).toBe(33);
    expect(fractionBitsFor(2 ** 30)).toBe(0);
    expect(fractionBitsFor(2 ** -30)).toBe(60);
    for (const c of [0.001, 0.37, 1.5, 10, 123.456, 1e6]) {
      const f = fractionBitsFor(c);
      expect(c * 2 ** f).toBeLessThanOrEqual(2 ** 30);
      expect(c * 2 ** (f + 1)).toBeGreaterThan(2 ** 30);
    }
    for (const bad of [0, -1, Infinity, NaN, 2 ** 31]) expect(() => fractionBitsFor(bad)).toThrow(/clipRange must be a number in \[2\^-30, 2\^30\]/);
  });

  it('round-trips within half a step, wraps negatives into the ring, and clips', () => {
    const clip = 2;
    const f = fractionBitsFor(clip);
    const delta = Float32Array.from([0, 1.25, -1.25, 1e-9, -0.333, 2, -2, 7, -1e30]);
    const q = quantize(delta, 0.5, clip);
    expect(q[1]).toBe(0.625 * 2 ** f);
    expect(q[2]).toBe(2 ** 32 - 0.625 * 2 ** f);
    expect(q[7]).toBe(1 * 2 ** f); // 7 clipped to 2, times 0.5
    expect(q[8]).toBe(2 ** 32 - 2 ** f);
    const back = dequantize(q, clip);
    const clipped = Array.from(delta, (x) => 0.5 * Math.min(clip, Math.max(-clip, x)));
    back.forEach((x, i) => expect(Math.abs(x - clipped[i])).toBeLessThanOrEqual(2 ** -(f + 1)));
  });

  it('sums in the ring equal the sum of the values within the bound', () => {
    const clip = 0.75;
    const weights = [0.2, 0.3, 0.1, 0.4];
    const deltas = weights.map((_, s) => Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * (s + 1)) * 0.9));
    const sum = new Uint32Array(1000);
    deltas.forEach((d, s) => quantize(d, weights[s], clip).forEach((q, i) => (sum[i] = (sum[i] + q) >>> 0)));
    const got = dequantize(sum, clip);
    const bound = quantizationErrorBound(4, clip);
    expect(bound).toBeLessThan(4 * 2 ** -31 * 1.001);
    got.forEach((x, i) => {
      const expected = deltas.reduce((s, d, j) => s + weights[j] * Math.min(clip, Math.max(-clip, d[i])), 0);
      expect(Math.abs(x - expected)).toBeLessThanOrEqual(bound);
    });
  });

  it('refuses weights outside (0, 1] and non-finite values', () => {
    const d = Float32Array.from([1, 2]);
    for (const w of [0, -0.5, 1.01, NaN]) expect(() => quantize(d, w, 1)).toThrow(/weight must be in \(0, 1\]/);
    expect(() => quantize(Float32Array.from([1, NaN]), 1, 1)).toThrow(/delta\[1\] is NaN/);
    expect(() => quantize(Float32Array.from([Infinity]), 1, 1)).toThrow(/delta\[0\] is Infinity/);
  });
});
