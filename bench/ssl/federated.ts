/**
 * FedAvg of self-supervised training, in process: each round every site starts from the global
 * weights, trains its own local steps on its own tiles only, and the coordinator averages the sites'
 * weights weighted by their sample counts (@histofed/aggregation weightedAverage: the federation's
 * averaging code). Only weights cross from a site to the average.
 */
import type { NamedTensor } from '@histofed/fl-core';
import { weightedAverage } from '@histofed/aggregation';

export interface SslSite {
  /** Images of the site (FedAvg's weight). */
  readonly count: number;
  /** Local training from `global` in round `round` (1-based): the site's new weights and its mean loss. */
  train(global: readonly NamedTensor[], round: number): Promise<{ weights: NamedTensor[]; loss: number }> | { weights: NamedTensor[]; loss: number };
}

export interface FedAvgResult {
  readonly weights: NamedTensor[];
  /** Per round: the sites' mean local loss (weighted by their counts). */
  readonly losses: number[];
}

export async function federatedAverage(initial: NamedTensor[], sites: readonly SslSite[], rounds: number): Promise<FedAvgResult> {
  let global = initial;
  const losses: number[] = [];
  for (let r = 1; r <= rounds; r++) {
    const updates = [];
    for (const s of sites) updates.push(await s.train(global, r));
    const counts = sites.map((s) => s.count);
    global = weightedAverage(
      updates.map((u) => u.weights),
      counts,
    );
    const total = counts.reduce((a, b) => a + b, 0);
    losses.push(updates.reduce((acc, u, i) => acc + (u.loss * counts[i]) / total, 0));
  }
  return { weights: global, losses };
}
