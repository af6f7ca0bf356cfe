import { Metrics, ValidationError, WeightSet } from '@histofed/fl-core';
import { selectSites } from './site-selection';
import { RoundPlan, RoundPlanRequest, SiteResult, Strategy } from './strategy';
import { weightedAverage, weightedMetrics } from './weights-math';

/** FedAvg (McMahan et al. 2017): the new global model is the sample-weighted mean of the site models. */
export class FedAvg implements Strategy {
  readonly name = 'fedavg';

  configureRound(request: RoundPlanRequest): RoundPlan {
    return selectSites(request);
  }

  aggregate(_global: WeightSet, results: readonly SiteResult[]): WeightSet {
    if (results.length === 0) throw new ValidationError('fedavg: no results to aggregate');
    return weightedAverage(
      results.map((r) => r.weights),
      results.map((r) => r.numSamples),
    );
  }

  aggregateMetrics(results: readonly SiteResult[]): Metrics {
    return weightedMetrics(results);
  }
}

/** Strategies by name, for run configs. */
export function createStrategy(name: string): Strategy {
  switch (name) {
    case 'fedavg':
      return new FedAvg();
    default:
      throw new ValidationError(`unknown strategy "${name}" (available: fedavg)`);
  }
}

export const STRATEGY_NAMES = ['fedavg'] as const;
