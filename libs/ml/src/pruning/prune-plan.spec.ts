import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { buildModel, describeModel } from '../models';
import { specWithFilters } from './conv-blocks';
import { countsForChannelFraction, countsForMultiplyAdds, keepTopChannels, multiplyAddsOf } from './prune-plan';

const se: ModelSpec = { kind: 'se-cnn', imageSize: 64, numClasses: 2, subtypeParents: [0, 0, 0, 0, 1, 1, 1, 1] };

beforeAll(async () => {
  await selectBackend('wasm');
});

describe('pruning targets', () => {
  it('scales every block by a channel fraction, rounded to multiples of 4', () => {
    expect(countsForChannelFraction(se, 1)).toEqual([16, 32, 64]);
    expect(countsForChannelFraction(se, 0.5)).toEqual([8, 16, 32]);
    expect(countsForChannelFraction(se, 0.25)).toEqual([4, 8, 16]);
    expect(countsForChannelFraction(se, 0.7)).toEqual([12, 24, 44]);
    expect(countsForChannelFraction(se, 0.01)).toEqual([4, 4, 4]);
    expect(countsForChannelFraction(se, 0.7, 1)).toEqual([11, 22, 45]);
    // of a pruned spec: its own counts
    expect(countsForChannelFraction(specWithFilters(se, [8, 16, 32]), 0.5)).toEqual([4, 8, 16]);
    expect(() => countsForChannelFraction(se, 0)).toThrow(/fraction: must be in \(0, 1\]/);
    expect(() => countsForChannelFraction(se, 0.5, 0)).toThrow(/multiple/);
  });

  it('finds the largest uniform pruning within a multiply-add budget (describeModel)', () => {
    const full = buildModel(se, 1);
    const reference = describeModel(full).multiplyAdds;
    full.dispose();
    expect(multiplyAddsOf(se)).toBe(reference);
    const half = countsForMultiplyAdds(se, 0.5);
    expect(half.reference).toBe(reference);
    expect(half.multiplyAdds).toBe(multiplyAddsOf(specWithFilters(se, half.filters)));
    expect(half.multiplyAdds).toBeLessThanOrEqual(reference / 2);
    expect(half.multiplyAdds).toBeGreaterThan(0.4 * reference);
    half.filters.forEach((f) => expect(f % 4).toBe(0));
    // between 50 % and 100 % of the channels: convolutions scale with cin x cout
    half.filters.forEach((f, i) => expect(f).toBeGreaterThan([8, 16, 32][i] - 1));
    expect(countsForMultiplyAdds(se, 1).filters).toEqual([16, 32, 64]);
  });

  it('keeps the highest-scoring channels of each block, ascending', () => {
    const keep = keepTopChannels([[0.3, 0.9, 0.1, 0.5], [1, 2]], [2, 2]);
    expect(keep).toEqual({ 1: [1, 3], 2: [0, 1] });
    expect(() => keepTopChannels([[1, 2]], [3])).toThrow(/counts\[0\]: must keep an integer in \[1, 2\] channels of block 1, got 3/);
    expect(() => keepTopChannels([[1, 2]], [0])).toThrow(ValidationError);
    expect(() => keepTopChannels([[1, 2]], [1, 1])).toThrow(/counts: 2 counts for 1 blocks/);
  });
});
