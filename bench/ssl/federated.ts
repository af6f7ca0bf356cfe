/**
 * FedAvg of self-supervised training, in process: each round every site starts from the global
 * weights, trains its own local steps on its own tiles only, and the coordinator averages the sites'
 * weights weighted by their sample counts (@histofed/aggregation weightedAverage: the federation's
 * averaging code). Only weights cross from a site to the average.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedTensor } from '@histofed/fl-core';
import { weightedAverage } from '@histofed/aggregation';
import { mulberry32, shuffledIndices } from '@histofed/ml';

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

export interface LocalStepsPlan {
  /** Items the site draws from (images). */
  readonly count: number;
  /** Items per step (at most `count`). */
  readonly batchSize: number;
  readonly steps: number;
  /** Adam's learning rate: a fresh optimizer per local round, as a site starts each round. */
  readonly learningRate: number;
  /** Seeds the first order of the items, and the stream that reshuffles them and draws the views. */
  readonly orderSeed: number;
  readonly randSeed: number;
}

/**
 * One site's local contrastive round, the loop both SSL arms share: `steps` Adam steps, each on
 * `batchSize` distinct items taken in a shuffled order (reshuffled from `rand` when fewer than a
 * batch remain). `step` draws the views of `items` (from `rand`) and returns the batch's loss. Returns
 * the mean loss.
 */
export function localContrastiveRound(
  p: LocalStepsPlan,
  step: (items: readonly number[], optimizer: tf.Optimizer, rand: () => number) => number,
): number {
  const optimizer = tf.train.adam(p.learningRate);
  const rand = mulberry32(p.randSeed);
  const b = Math.min(p.batchSize, p.count);
  let order = shuffledIndices(p.count, p.orderSeed);
  let at = 0;
  let total = 0;
  try {
    for (let s = 0; s < p.steps; s++) {
      if (at + b > p.count) {
        order = shuffledIndices(p.count, Math.floor(rand() * 2 ** 31));
        at = 0;
      }
      total += step(Array.from(order.subarray(at, at + b)), optimizer, rand);
      at += b;
    }
  } finally {
    optimizer.dispose();
  }
  return total / p.steps;
}
