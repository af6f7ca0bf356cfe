import { Metrics, NamedTensor, ValidationError, WeightLayoutError, WeightSet } from '@histofed/fl-core';
import { selectSites } from './site-selection';
import { AggregateResult, RoundPlan, RoundPlanRequest, SiteResult, Strategy, StrategyState } from './strategy';
import { assertResultsMatchGlobal, weightedAverage, weightedMetrics } from './weights-math';

export interface FedOptOptions {
  /** Server learning rate (eta > 0). */
  readonly eta?: number;
  /** First-moment (momentum) decay, in [0, 1). */
  readonly beta1?: number;
  /** Second-moment decay, in [0, 1). Not used by FedAdagrad. */
  readonly beta2?: number;
  /** Adaptivity: added to sqrt(v) in the denominator (tau > 0). */
  readonly tau?: number;
}

/**
 * Defaults. Reddi et al. (2021) Algorithm 2, without bias correction, moments starting at zero
 * (as Flower does). Flower's FedAdam uses eta = 0.1, tau = 1e-9; with v starting at zero that
 * makes the first server step eta * sign(delta) = 0.1 on every coordinate, larger than most
 * weights of a small CNN. We take eta = 1e-2 and tau = 1e-3 (Flower's FedYogi defaults and the
 * range Reddi et al. found best): the first step is at most 0.01 per coordinate, and coordinates
 * whose pseudo-gradient is tiny next to tau barely move. FedAdagrad keeps Flower's beta1 = 0
 * (no momentum); its v only grows, so it uses eta = 0.1 like Flower.
 */
export const FEDADAM_DEFAULTS = { eta: 1e-2, beta1: 0.9, beta2: 0.99, tau: 1e-3 } as const;
export const FEDYOGI_DEFAULTS = { eta: 1e-2, beta1: 0.9, beta2: 0.99, tau: 1e-3 } as const;
export const FEDADAGRAD_DEFAULTS = { eta: 1e-1, beta1: 0, tau: 1e-3 } as const;

type Resolved = { eta: number; beta1: number; beta2: number; tau: number };

function checkOption(strategy: string, name: string, value: unknown, ok: (v: number) => boolean, rule: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) {
    throw new ValidationError(`strategy "${strategy}": option "${name}" must be ${rule}, got ${String(value)}`);
  }
  return value;
}

/**
 * Adaptive federated optimization (Reddi et al. 2021, "Adaptive Federated Optimization"): the
 * sample-weighted mean of the site models minus the global model is a pseudo-gradient delta that
 * a server optimizer applies:
 *   m = beta1 * m + (1 - beta1) * delta
 *   v = (variant)
 *   global = global + eta * m / (sqrt(v) + tau)
 * m and v are the strategy state: named tensors 'm/<tensor>' then 'v/<tensor>', in the order of
 * the global model, float32 like the model. Without state (first round) both start at zero.
 * Arithmetic per coordinate is float64; results are stored as float32.
 */
abstract class FedOpt implements Strategy {
  abstract readonly name: string;
  readonly eta: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly tau: number;

  protected constructor(name: string, options: FedOptOptions, defaults: Resolved) {
    const o: Resolved = {
      eta: options.eta ?? defaults.eta,
      beta1: options.beta1 ?? defaults.beta1,
      beta2: options.beta2 ?? defaults.beta2,
      tau: options.tau ?? defaults.tau,
    };
    this.eta = checkOption(name, 'eta', o.eta, (v) => v > 0, 'a positive finite number');
    this.beta1 = checkOption(name, 'beta1', o.beta1, (v) => v >= 0 && v < 1, 'a number in [0, 1)');
    this.beta2 = checkOption(name, 'beta2', o.beta2, (v) => v >= 0 && v < 1, 'a number in [0, 1)');
    this.tau = checkOption(name, 'tau', o.tau, (v) => v > 0, 'a positive finite number');
  }

  /** The new second moment of one coordinate from the previous one and delta^2. */
  protected abstract nextV(v: number, d2: number): number;

  configureRound(request: RoundPlanRequest): RoundPlan {
    return selectSites(request);
  }

  aggregate(global: WeightSet, results: readonly SiteResult[], state?: StrategyState): AggregateResult {
    assertResultsMatchGlobal(this.name, global, results);
    if (state !== undefined) this.checkState(global, state);
    const mean = weightedAverage(
      results.map((r) => r.weights),
      results.map((r) => r.numSamples),
    );
    const k = global.length;
    const weights: NamedTensor[] = [];
    const ms: NamedTensor[] = [];
    const vs: NamedTensor[] = [];
    const { eta, beta1, tau } = this;
    for (let t = 0; t < k; t++) {
      const g = global[t].values;
      const avg = mean[t].values;
      const mPrev = state?.[t].values;
      const vPrev = state?.[k + t].values;
      const w = new Float32Array(g.length);
      const m = new Float32Array(g.length);
      const v = new Float32Array(g.length);
      for (let j = 0; j < g.length; j++) {
        const d = avg[j] - g[j];
        const mj = beta1 * (mPrev ? mPrev[j] : 0) + (1 - beta1) * d;
        const vj = this.nextV(vPrev ? vPrev[j] : 0, d * d);
        m[j] = mj;
        v[j] = vj;
        w[j] = g[j] + (eta * mj) / (Math.sqrt(vj) + tau);
      }
      const { name, shape } = global[t];
      weights.push({ name, shape: [...shape], values: w });
      ms.push({ name: `m/${name}`, shape: [...shape], values: m });
      vs.push({ name: `v/${name}`, shape: [...shape], values: v });
    }
    return { weights, state: [...ms, ...vs] };
  }

  aggregateMetrics(results: readonly SiteResult[]): Metrics {
    return weightedMetrics(results);
  }

  /** The state must hold 'm/<t>' for every global tensor t, then 'v/<t>', with t's shape. */
  private checkState(global: WeightSet, state: StrategyState): void {
    const expected = [...global.map((g) => ({ ...g, name: `m/${g.name}` })), ...global.map((g) => ({ ...g, name: `v/${g.name}` }))];
    if (state.length !== expected.length) {
      throw new WeightLayoutError(
        `${this.name}: state: expected ${expected.length} tensors (m/ and v/ of each of the ${global.length} model tensors), got ${state.length}`,
      );
    }
    expected.forEach((e, i) => {
      const s = state[i];
      if (s.name !== e.name) throw new WeightLayoutError(`${this.name}: state: tensor ${i} should be "${e.name}", got "${s.name}"`);
      if (s.shape.length !== e.shape.length || s.shape.some((d, j) => d !== e.shape[j]) || s.values.length !== e.values.length) {
        throw new WeightLayoutError(
          `${this.name}: state: tensor "${e.name}" should have shape [${e.shape.join(', ')}], got [${s.shape.join(', ')}]`,
        );
      }
    });
  }
}

/** FedAdam: v = beta2 * v + (1 - beta2) * delta^2. */
export class FedAdam extends FedOpt {
  readonly name = 'fedadam';
  constructor(options: FedOptOptions = {}) {
    super('fedadam', options, FEDADAM_DEFAULTS);
  }
  protected nextV(v: number, d2: number): number {
    return this.beta2 * v + (1 - this.beta2) * d2;
  }
}

/** FedYogi: v = v - (1 - beta2) * delta^2 * sign(v - delta^2); v changes additively, never faster than Adam's. */
export class FedYogi extends FedOpt {
  readonly name = 'fedyogi';
  constructor(options: FedOptOptions = {}) {
    super('fedyogi', options, FEDYOGI_DEFAULTS);
  }
  protected nextV(v: number, d2: number): number {
    return v - (1 - this.beta2) * d2 * Math.sign(v - d2);
  }
}

/** FedAdagrad: v = v + delta^2 (beta2 is not used). */
export class FedAdagrad extends FedOpt {
  readonly name = 'fedadagrad';
  constructor(options: Omit<FedOptOptions, 'beta2'> = {}) {
    super('fedadagrad', options, { ...FEDADAGRAD_DEFAULTS, beta2: 0 });
  }
  protected nextV(v: number, d2: number): number {
    return v + d2;
  }
}
