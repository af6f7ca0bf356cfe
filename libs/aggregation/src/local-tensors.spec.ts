import { namedTensor } from '@histofed/fl-core';
import { createStrategy } from './create-strategy';
import { FedAvg } from './fedavg';
import { LocalTensorsStrategy, withLocalTensorPolicy } from './local-tensors';

const model = (conv: number, gamma: number, mean: number, head: number) => [
  namedTensor('conv1/kernel', [2], [conv, conv + 1]),
  namedTensor('bn1/gamma', [2], [gamma, gamma]),
  namedTensor('bn1/beta', [2], [gamma / 2, gamma / 2]),
  namedTensor('head/kernel', [2], [head, -head]),
  namedTensor('bn1/moving_mean', [2], [mean, mean]),
  namedTensor('bn1/moving_variance', [2], [mean + 1, mean + 1]),
];

describe('LocalTensorsStrategy (FedBN)', () => {
  const global = model(0, 1, 0, 0);
  const results = [
    { siteId: 'a', numSamples: 1, weights: model(2, 5, 7, 4), metrics: {} },
    { siteId: 'b', numSamples: 3, weights: model(6, 9, -3, 8), metrics: {} },
  ];

  it("leaves batch-norm tensors exactly as they were in the global model and averages the rest", () => {
    const out = new LocalTensorsStrategy(new FedAvg(), 'batch-norm').aggregate(global, results).weights;
    expect(out.map((t) => t.name)).toEqual(global.map((t) => t.name));
    for (const name of ['bn1/gamma', 'bn1/beta', 'bn1/moving_mean', 'bn1/moving_variance']) {
      const i = global.findIndex((t) => t.name === name);
      expect(out[i]).toBe(global[i]); // the very same tensor: not recomputed, not rounded
    }
    expect(Array.from(out[0].values)).toEqual([5, 6]); // (2 * 1 + 6 * 3) / 4, (3 * 1 + 7 * 3) / 4
    expect(Array.from(out[3].values)).toEqual([7, -7]); // the head is shared under 'batch-norm'
  });

  it("also keeps the heads local under 'batch-norm-and-heads'", () => {
    const out = withLocalTensorPolicy(new FedAvg(), 'batch-norm-and-heads').aggregate(global, results).weights;
    expect(out[3]).toBe(global[3]);
    expect(Array.from(out[0].values)).toEqual([5, 6]);
  });

  it("is the inner strategy itself under 'none'", () => {
    const inner = new FedAvg();
    expect(withLocalTensorPolicy(inner, 'none')).toBe(inner);
  });

  it("gives a stateful strategy's state for the shared tensors only, and takes it back", () => {
    const fedadam = withLocalTensorPolicy(createStrategy('fedadam', { eta: 0.1 }), 'batch-norm');
    const first = fedadam.aggregate(global, results);
    expect(first.state!.map((t) => t.name).some((n) => n.includes('bn1'))).toBe(false);
    expect(first.state!.length).toBeGreaterThan(0);
    const second = fedadam.aggregate(first.weights, results, first.state);
    expect(second.weights[1]).toBe(first.weights[1]);
  });

  it('refuses results whose layout differs, and a policy that leaves nothing to aggregate', () => {
    const strategy = new LocalTensorsStrategy(new FedAvg(), 'batch-norm');
    expect(() => strategy.aggregate(global, [{ ...results[0], weights: model(1, 1, 1, 1).slice(1) }])).toThrow(/site "a": expected 6 tensors, got 5/);
    const onlyBn = [namedTensor('bn1/gamma', [1], [1])];
    expect(() => strategy.aggregate(onlyBn, [{ siteId: 'a', numSamples: 1, weights: onlyBn, metrics: {} }])).toThrow(/leaves no tensor to aggregate/);
  });
});
