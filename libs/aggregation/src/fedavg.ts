import { Metrics, WeightSet } from '@histofed/fl-core';
import { selectSites } from './site-selection';
import { AggregateResult, RoundPlan, RoundPlanRequest, SiteResult, Strategy } from './strategy';
import { assertResultsMatchGlobal, weightedAverage, weightedMetrics } from './weights-math';

/** FedAvg (McMahan et al. 2017): the new global model is the sample-weighted mean of the site models. Stateless. */
export class FedAvg implements Strategy {
  readonly name = 'fedavg';

  configureRound(request: RoundPlanRequest): RoundPlan {
    return selectSites(request);
  }

  aggregate(global: WeightSet, results: readonly SiteResult[]): AggregateResult {
    assertResultsMatchGlobal(this.name, global, results);
    return {
      weights: weightedAverage(
        results.map((r) => r.weights),
        results.map((r) => r.numSamples),
      ),
    };
  }

  aggregateMetrics(results: readonly SiteResult[]): Metrics {
    return weightedMetrics(results);
  }
}
