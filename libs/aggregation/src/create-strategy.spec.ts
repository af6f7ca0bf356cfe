import { ValidationError } from '@histofed/fl-core';
import { STRATEGY_NAMES, createStrategy } from './create-strategy';
import { FedAdam } from './fedopt';
import { TrimmedMean } from './robust';

describe('createStrategy', () => {
  it('creates every listed strategy by name', () => {
    expect([...STRATEGY_NAMES]).toEqual(['fedavg', 'fedadam', 'fedyogi', 'fedadagrad', 'trimmed-mean', 'median']);
    for (const name of STRATEGY_NAMES) expect(createStrategy(name).name).toBe(name);
  });

  it('passes options through', () => {
    const adam = createStrategy('fedadam', { eta: 0.05, tau: 1e-4 }) as FedAdam;
    expect([adam.eta, adam.beta1, adam.beta2, adam.tau]).toEqual([0.05, 0.9, 0.99, 1e-4]);
    expect((createStrategy('trimmed-mean', { trim: 0.1 }) as TrimmedMean).trim).toBe(0.1);
  });

  it('refuses unknown strategies, unknown options and bad values with a ValidationError naming them', () => {
    expect(() => createStrategy('fedsgd')).toThrow(/unknown strategy "fedsgd" \(available: fedavg, fedadam/);
    expect(() => createStrategy('fedavg', { trim: 0.1 })).toThrow(/strategy "fedavg" has no option "trim" \(options: none\)/);
    expect(() => createStrategy('fedadam', { lr: 0.1 })).toThrow(/strategy "fedadam" has no option "lr" \(options: eta, beta1, beta2, tau\)/);
    expect(() => createStrategy('fedadagrad', { beta2: 0.9 })).toThrow(/strategy "fedadagrad" has no option "beta2"/);
    expect(() => createStrategy('median', { trim: 0.1 })).toThrow(/strategy "median" has no option "trim"/);
    expect(() => createStrategy('trimmed-mean', { trim: 0.6 })).toThrow(/strategy "trimmed-mean": option "trim"/);
    expect(() => createStrategy('fedyogi', { eta: -1 })).toThrow(ValidationError);
    expect(() => createStrategy('fedyogi', { eta: 'x' as unknown as number })).toThrow(/option "eta" must be a positive finite number, got x/);
  });
});
