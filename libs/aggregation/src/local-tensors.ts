import { LocalTensorPolicy, Metrics, ValidationError, WeightSet, isLocalTensor } from '@histofed/fl-core';
import { AggregateResult, RoundPlan, RoundPlanRequest, SiteResult, Strategy, StrategyState } from './strategy';
import { assertResultsMatchGlobal } from './weights-math';

/**
 * FedBN and personalized heads as a strategy decorator: the inner strategy aggregates the shared
 * tensors only (its state, e.g. FedAdam's moments, covers only those); the tensors the policy keeps
 * local come out of `aggregate` exactly as they went into it in `global` (sites keep their own
 * copies and never take the global one). Pure, like every strategy.
 */
export class LocalTensorsStrategy implements Strategy {
  readonly name: string;

  constructor(
    readonly inner: Strategy,
    readonly policy: LocalTensorPolicy,
  ) {
    this.name = `${inner.name}+local(${policy})`;
  }

  configureRound(request: RoundPlanRequest): RoundPlan {
    return this.inner.configureRound(request);
  }

  aggregate(global: WeightSet, results: readonly SiteResult[], state?: StrategyState): AggregateResult {
    assertResultsMatchGlobal(this.name, global, results);
    const shared = (w: WeightSet) => w.filter((t) => !isLocalTensor(t.name, this.policy));
    const sharedGlobal = shared(global);
    if (sharedGlobal.length === 0) throw new ValidationError(`${this.name}: the policy leaves no tensor to aggregate`);
    const inner = this.inner.aggregate(
      sharedGlobal,
      results.map((r) => ({ ...r, weights: shared(r.weights) })),
      state,
    );
    const aggregated = new Map(inner.weights.map((t) => [t.name, t]));
    const weights = global.map((t) => (isLocalTensor(t.name, this.policy) ? t : aggregated.get(t.name)!));
    return inner.state ? { weights, state: inner.state } : { weights };
  }

  aggregateMetrics(results: readonly SiteResult[]): Metrics {
    return this.inner.aggregateMetrics(results);
  }
}

/** `inner` itself when every tensor is shared, else wrapped so the policy's local tensors stay out of aggregation. */
export function withLocalTensorPolicy(inner: Strategy, policy: LocalTensorPolicy): Strategy {
  return policy === 'none' ? inner : new LocalTensorsStrategy(inner, policy);
}
