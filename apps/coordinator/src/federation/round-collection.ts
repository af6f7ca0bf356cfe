import { Metrics, TensorSpec, WeightSet, layoutOf } from '@histofed/fl-core';
import { SiteResult } from '@histofed/aggregation';
import type { MaskedSum } from '@histofed/secagg';
import { ContributionKind } from '../persistence/records';

export interface CollectionOutcome {
  readonly results: SiteResult[];
  /** siteId -> why it did not contribute (failed, dropped, timed out). */
  readonly missing: Record<string, string>;
}

/**
 * The open window of one round (or of the final personalization): who is expected, what arrived.
 * Settles when every participant has answered or dropped, or when the deadline passes.
 */
export class RoundCollection {
  readonly layout: readonly TensorSpec[];
  private readonly results = new Map<string, SiteResult>();
  private readonly missing = new Map<string, string>();
  private settle!: (o: CollectionOutcome) => void;
  readonly outcome: Promise<CollectionOutcome>;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly runId: string,
    readonly round: number,
    readonly kind: ContributionKind,
    readonly participants: ReadonlySet<string>,
    readonly baseModelHash: string,
    readonly baseWeights: WeightSet,
    readonly maxUpdateNorm: number,
    deadlineMs: number,
    /**
     * Secure aggregation: sites send masked inputs, added to this running sum as they arrive; no
     * single update is ever kept (results then carry counts and metrics, no weights).
     */
    readonly secureSum?: MaskedSum,
  ) {
    this.layout = layoutOf(baseWeights);
    this.outcome = new Promise((resolve) => (this.settle = resolve));
    this.timer = setTimeout(() => this.close('deadline passed before the site answered'), deadlineMs);
    this.timer.unref();
  }

  /** Why this site may not contribute now, or null if it may. */
  refusal(siteId: string): string | null {
    if (this.closed) return `round ${this.round} of run ${this.runId} is closed`;
    if (!this.participants.has(siteId)) return `site ${siteId} is not a participant of round ${this.round}`;
    if (this.results.has(siteId)) return `site ${siteId} already contributed to round ${this.round}`;
    if (this.missing.has(siteId)) return `site ${siteId} left round ${this.round}: ${this.missing.get(siteId)}`;
    return null;
  }

  accept(siteId: string, numSamples: number, weights: WeightSet, metrics: Metrics): void {
    this.results.set(siteId, { siteId, numSamples, weights, metrics });
    this.maybeFinish();
  }

  /**
   * A masked input: added to the secure sum, never stored. Refused once the window closed: the sum
   * must hold exactly the inputs of the sites the outcome lists (they are unmasked together).
   */
  acceptMasked(siteId: string, numSamples: number, masked: Uint32Array, metrics: Metrics): void {
    const refusal = this.refusal(siteId);
    if (refusal) throw new Error(refusal);
    this.secureSum!.add(siteId, masked);
    this.accept(siteId, numSamples, [], metrics);
  }

  markMissing(siteId: string, reason: string): void {
    if (this.closed || !this.participants.has(siteId) || this.results.has(siteId)) return;
    this.missing.set(siteId, reason);
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.results.size + this.missing.size >= this.participants.size) this.close('');
  }

  /** Ends the window now; participants that did not answer are recorded with `reason`. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const p of this.participants) {
      if (!this.results.has(p) && !this.missing.has(p)) this.missing.set(p, reason || 'no answer');
    }
    this.settle({
      results: [...this.results.values()].sort((a, b) => a.siteId.localeCompare(b.siteId)),
      missing: Object.fromEntries(this.missing),
    });
  }
}
