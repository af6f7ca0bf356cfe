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
 * A federated strategy, Flower-style: pure functions of their inputs, no I/O, no clock.
 * The coordinator owns sockets, deadlines and storage; the strategy decides who trains and how
 * results combine.
 */
export interface Strategy {
  readonly name: string;
  configureRound(request: RoundPlanRequest): RoundPlan;
  aggregate(global: WeightSet, results: readonly SiteResult[]): WeightSet;
  aggregateMetrics(results: readonly SiteResult[]): Metrics;
}
