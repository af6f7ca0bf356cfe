import { isLocalTensor, localTensorsOf, withLocalTensors } from './local-tensors';
import { namedTensor } from './weights';

describe('local tensor policies', () => {
  it('names batch-norm variables of any layer, and the heads only with heads', () => {
    for (const n of ['bn1/gamma', 'bn2/beta', 'block_9_expand_BN/moving_mean', 'bn3/moving_variance']) {
      expect([n, isLocalTensor(n, 'batch-norm')]).toEqual([n, true]);
    }
    for (const n of ['conv1/kernel', 'conv1/bias', 'se1_reduce/kernel', 'head/kernel', 'subtype_head/bias']) {
      expect([n, isLocalTensor(n, 'batch-norm')]).toEqual([n, false]);
    }
    expect(isLocalTensor('head/kernel', 'batch-norm-and-heads')).toBe(true);
    expect(isLocalTensor('subtype_head/bias', 'batch-norm-and-heads')).toBe(true);
    expect(isLocalTensor('header/kernel', 'batch-norm-and-heads')).toBe(false);
    expect(isLocalTensor('bn1/gamma', 'none')).toBe(false);
  });

  it("replaces a model's local tensors by a site's own, by name, refusing another shape", () => {
    const global = [namedTensor('conv1/kernel', [2], [1, 2]), namedTensor('bn1/gamma', [2], [1, 1])];
    const own = localTensorsOf([namedTensor('conv1/kernel', [2], [9, 9]), namedTensor('bn1/gamma', [2], [3, 4])], 'batch-norm');
    expect(own.map((t) => t.name)).toEqual(['bn1/gamma']);
    const merged = withLocalTensors(global, own);
    expect(merged[0]).toBe(global[0]);
    expect(Array.from(merged[1].values)).toEqual([3, 4]);
    expect(() => withLocalTensors(global, [namedTensor('bn1/gamma', [3], [1, 1, 1])])).toThrow(/local tensor bn1\/gamma: shape \[3\]/);
  });
});
