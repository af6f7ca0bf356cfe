import { ValidationError } from '@histofed/fl-core';
import { FedAvg } from './fedavg';
import { FedAdagrad, FedAdam, FedYogi } from './fedopt';
import { CoordinateMedian, TrimmedMean } from './robust';
import { Strategy } from './strategy';

/** Strategy names accepted in run configs. */
export const STRATEGY_NAMES = ['fedavg', 'fedadam', 'fedyogi', 'fedadagrad', 'trimmed-mean', 'median'] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

/** Numeric options of a strategy, e.g. { eta: 0.01, tau: 0.001 } or { trim: 0.1 }. */
export type StrategyOptions = Readonly<Record<string, number>>;

/** The options each strategy accepts; anything else is refused so that a typo does not go unnoticed. */
export const STRATEGY_OPTION_NAMES: Readonly<Record<StrategyName, readonly string[]>> = {
  fedavg: [],
  fedadam: ['eta', 'beta1', 'beta2', 'tau'],
  fedyogi: ['eta', 'beta1', 'beta2', 'tau'],
  fedadagrad: ['eta', 'beta1', 'tau'],
  'trimmed-mean': ['trim'],
  median: [],
};

/**
 * Strategies by name, for run configs. Options are validated: an unknown option or a value out of
 * range throws a ValidationError naming the strategy and the option.
 */
export function createStrategy(name: string, options: StrategyOptions = {}): Strategy {
  if (!(STRATEGY_NAMES as readonly string[]).includes(name)) {
    throw new ValidationError(`unknown strategy "${name}" (available: ${STRATEGY_NAMES.join(', ')})`);
  }
  const allowed = STRATEGY_OPTION_NAMES[name as StrategyName];
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new ValidationError(
        `strategy "${name}" has no option "${key}" (options: ${allowed.length ? allowed.join(', ') : 'none'})`,
      );
    }
  }
  switch (name as StrategyName) {
    case 'fedavg':
      return new FedAvg();
    case 'fedadam':
      return new FedAdam(options);
    case 'fedyogi':
      return new FedYogi(options);
    case 'fedadagrad':
      return new FedAdagrad(options);
    case 'trimmed-mean':
      return new TrimmedMean(options);
    case 'median':
      return new CoordinateMedian();
  }
}
