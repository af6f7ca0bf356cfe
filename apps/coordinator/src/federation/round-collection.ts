import { Metrics, TensorSpec, WeightSet, layoutOf } from '@histofed/fl-core';
import { SiteResult } from '@histofed/aggregation';
import type { FeatureMomentsWire } from '@histofed/protocol';
import type { MaskedSum } from '@histofed/secagg';
import { ContributionKind } from '../persistence/records';

export interface CollectionOutcome {
  readonly results: SiteResult[];
  /** siteId -> why it did not contribute (failed, dropped, timed out). */
  readonly missing: Record<string, string>;
  /** Feature alignment: the moments the contributing sites reported. */
  readonly featureMoments?: ReadonlyMap<string, FeatureMomentsWire>;
}

/**
 * The open window of one round (or of the final personalization): who is expected, what arrived.
 * Settles when every participant has answered or dropped, or when the deadline passes.
 *
 * Accepting a contribution takes awaits (its record and model go to the database), and the window
 * must not close in between: otherwise the database would say "accepted" while the aggregate leaves
 * the update out. So a contribution first `reserve`s its place (synchronously, after its last
 * check), is recorded, then `commit`s (or `release`s on failure); a close — the deadline or the last
 * answer — that comes while reservations are pending waits for them, and no new reservation is
 * granted once the window is closing.
 */
export class RoundCollection {
  readonly layout: readonly TensorSpec[];
  private readonly results = new Map<string, SiteResult>();
  private readonly missing = new Map<string, string>();
  /** Feature alignment: the moments each contributing site reported with its update. */
  private readonly moments = new Map<string, FeatureMomentsWire>();
  private settle!: (o: CollectionOutcome) => void;
  readonly outcome: Promise<CollectionOutcome>;
  private timer: NodeJS.Timeout | undefined;
  /** Settled: the outcome is final. */
  private closed = false;
  /** The reason of a close waiting for pending reservations, or null. */
  private closing: string | null = null;
  /** Sites whose contribution is being recorded (reserved, neither committed nor released). */
  private readonly pending = new Set<string>();

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
    if (this.closed || this.closing !== null) return `round ${this.round} of run ${this.runId} is closed`;
    if (!this.participants.has(siteId)) return `site ${siteId} is not a participant of round ${this.round}`;
    if (this.results.has(siteId) || this.pending.has(siteId)) return `site ${siteId} already contributed to round ${this.round}`;
    if (this.missing.has(siteId)) return `site ${siteId} left round ${this.round}: ${this.missing.get(siteId)}`;
    return null;
  }

  /** Holds the site's place while its contribution is recorded: null, or why it may not contribute. */
  reserve(siteId: string): string | null {
    const refusal = this.refusal(siteId);
    if (refusal === null) this.pending.add(siteId);
    return refusal;
  }

  /** The reserved contribution is recorded: it is part of the outcome. */
  commit(siteId: string, numSamples: number, weights: WeightSet, metrics: Metrics, featureMoments?: FeatureMomentsWire): void {
    this.assertReserved(siteId);
    this.pending.delete(siteId);
    this.results.set(siteId, { siteId, numSamples, weights, metrics });
    if (featureMoments) this.moments.set(siteId, featureMoments);
    this.afterPending();
  }

  /**
   * A reserved masked input: added to the secure sum, never stored. The sum must hold exactly the
   * inputs of the sites the outcome lists (they are unmasked together): a reservation guarantees it.
   */
  commitMasked(siteId: string, numSamples: number, masked: Uint32Array, metrics: Metrics): void {
    this.assertReserved(siteId);
    this.secureSum!.add(siteId, masked);
    this.commit(siteId, numSamples, [], metrics);
  }

  /** The reserved contribution could not be recorded: the site is missing (with `reason`) or may try again. */
  release(siteId: string, reason?: string): void {
    if (!this.pending.delete(siteId)) return;
    if (reason !== undefined) this.missing.set(siteId, reason);
    this.afterPending();
  }

  /** Reserve and commit at once (nothing to await in between). */
  accept(siteId: string, numSamples: number, weights: WeightSet, metrics: Metrics): void {
    const refusal = this.reserve(siteId);
    if (refusal) throw new Error(refusal);
    this.commit(siteId, numSamples, weights, metrics);
  }

  /** The feature moments reported by the sites in the outcome (feature alignment), by site. */
  featureMoments(): ReadonlyMap<string, FeatureMomentsWire> {
    return new Map([...this.moments].filter(([siteId]) => this.results.has(siteId)));
  }

  markMissing(siteId: string, reason: string): void {
    if (this.closed || this.closing !== null || !this.participants.has(siteId) || this.results.has(siteId) || this.pending.has(siteId)) return;
    this.missing.set(siteId, reason);
    this.maybeFinish();
  }

  private assertReserved(siteId: string): void {
    if (!this.pending.has(siteId)) throw new Error(`site ${siteId} has no reserved contribution in round ${this.round}`);
  }

  private afterPending(): void {
    if (this.closing !== null) {
      if (this.pending.size === 0) this.finish(this.closing);
    } else {
      this.maybeFinish();
    }
  }

  private maybeFinish(): void {
    if (this.results.size + this.missing.size >= this.participants.size) this.close('');
  }

  /**
   * Ends the window: no new contribution is admitted from now on; the outcome settles once the
   * contributions being recorded are committed or released. Participants that did not answer are
   * recorded with `reason`.
   */
  close(reason: string): void {
    if (this.closed || this.closing !== null) return;
    this.closing = reason;
    if (this.timer) clearTimeout(this.timer);
    if (this.pending.size === 0) this.finish(reason);
  }

  private finish(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.participants) {
      if (!this.results.has(p) && !this.missing.has(p)) this.missing.set(p, reason || 'no answer');
    }
    this.settle({
      results: [...this.results.values()].sort((a, b) => a.siteId.localeCompare(b.siteId)),
      missing: Object.fromEntries(this.missing),
      featureMoments: this.featureMoments(),
    });
  }
}
