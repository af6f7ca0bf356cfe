import { Metrics, WeightSet } from '@histofed/fl-core';

/** A site that is connected, approved and could take part in a round. */
export interface AvailableSite {
  readonly siteId: string;
  readonly trainSamples: number;
}

export interface RoundPlanRequest {
  readonly round: number;
  readonly available: readonly AvailableSite[];
  readonly minSites: number;
  readonly maxSites: number;
  readonly seed: number;
}

/** Who trains this round, or why the round must wait. */
export type RoundPlan =
  | { readonly kind: 'train'; readonly participants: readonly string[] }
  | { readonly kind: 'wait'; readonly reason: string };

/** One site's contribution, already decrypted and validated. */
export interface SiteResult {
  readonly siteId: string;
  readonly numSamples: number;
  readonly weights: WeightSet;
  readonly metrics: Metrics;
}

/**
 * Server-side state a strategy carries from one aggregation to the next (e.g. FedAdam's first and
 * second moments), as named tensors so that the coordinator can encode and store it exactly like a
 * model (encodeWeights / putModel). Stateful strategies name their tensors `<slot>/<model tensor>`,
 * e.g. 'm/conv1/kernel' and 'v/conv1/kernel'. Treat it as opaque: pass back what `aggregate`
 * returned, or nothing at the start of a run.
 */
export type StrategyState = WeightSet;

/** The new global model and, for stateful strategies, the state to pass to the next `aggregate`. */
export interface AggregateResult {
  readonly weights: WeightSet;
  /** Absent for stateless strategies (FedAvg, trimmed mean, median). */
  readonly state?: StrategyState;
}

/**
 * A federated strategy, Flower-style: pure functions of their inputs, no I/O, no clock.
 * The coordinator owns sockets, deadlines and storage; the strategy decides who trains and how
 * results combine. Any state a strategy needs across rounds is explicit (`state` in and out of
 * `aggregate`), so a restarted coordinator can resume from what it stored. `aggregate` never
 * mutates its inputs (global weights, site weights, state).
 */
export interface Strategy {
  readonly name: string;
  configureRound(request: RoundPlanRequest): RoundPlan;
  aggregate(global: WeightSet, results: readonly SiteResult[], state?: StrategyState): AggregateResult;
  aggregateMetrics(results: readonly SiteResult[]): Metrics;
}
