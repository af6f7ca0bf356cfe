import { Inject, Injectable } from '@nestjs/common';
import type { ModelSpec, StainNormalizationTarget, WeightSet } from '@histofed/fl-core';
import { encodeWeights } from '@histofed/fl-core';
import { fromBase64, verify } from '@histofed/crypto';
import { aggregateGateStatistics, countsForMultiplyAdds, filterCounts, keepTopChannels, multiplyAddsOf, pruneWeights, type GateStatistics } from '@histofed/ml';
import { ChannelStatsAck, PruningEvents, channelStatsSignedBytes } from '@histofed/protocol';
import { ModelDistribution } from '../federation/model-distribution';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';

/** A site has this long to run its training images through the model (default of pruning.statsTimeoutSeconds). */
export const CHANNEL_STATS_TIMEOUT_SECONDS = 300;

/** The SE gate statistics the sites sent, combined, and whose were used or refused (with the reason). */
export interface GateStatisticsOutcome {
  readonly combined: GateStatistics | null;
  readonly used: { siteId: string; images: number }[];
  readonly refused: Record<string, string>;
}

/** A pruning step's result: the smaller model and what it kept. */
export interface PruningStepResult {
  readonly spec: ModelSpec;
  readonly weights: WeightSet;
  readonly filters: { readonly before: number[]; readonly after: number[] };
  readonly multiplyAdds: { readonly before: number; readonly after: number };
}

/**
 * One pruning step, pure: keep `keep` of the current model's multiply-adds (libs/ml
 * countsForMultiplyAdds: the largest uniform share of every block's channels within the budget),
 * in each block the channels of highest score — the sites' mean SE gates, or the filters' weight
 * norms — and slice the weights (pruneWeights: the pruned spec records the shapes).
 */
export function pruningStep(spec: ModelSpec, weights: WeightSet, keep: number, scores: readonly (readonly number[])[]): PruningStepResult {
  const before = filterCounts(spec);
  const target = countsForMultiplyAdds(spec, keep);
  const pruned = pruneWeights(spec, weights, keepTopChannels(scores, target.filters));
  return {
    spec: pruned.spec,
    weights: pruned.weights,
    filters: { before, after: filterCounts(pruned.spec) },
    multiplyAdds: { before: target.reference, after: multiplyAddsOf(pruned.spec) },
  };
}

/**
 * Whether the pruning step before `round` was already applied (a coordinator restarted after
 * pruning, before the round completed): the step replaces the current global model, so it then
 * differs from the model round - 1 ended with.
 */
export function pruningApplied(rounds: readonly { round: number; status: string; modelHash: string | null }[], round: number, currentModelHash: string): boolean {
  const previous = rounds.find((r) => r.round === round - 1 && r.status === 'completed');
  return previous?.modelHash != null && previous.modelHash !== currentModelHash;
}

/**
 * Federated SE-gate ranking (issue 18): asks each participant for the mean SE gate of every channel
 * of the current global model over its training images (PruningEvents.channelStats: numbers only,
 * signed), checks each answer — the site's signature with its enrolled key, the model it is about,
 * one gate per channel of every block — and averages the valid ones weighted by their image counts.
 * A site that does not answer, or answers wrongly, is left out with the reason; the caller decides
 * whether enough remain.
 */
@Injectable()
export class FederatedPruning {
  constructor(
    private readonly sessions: SiteSessionsService,
    private readonly models: ModelDistribution,
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(LOGGER) private readonly logger: JsonLogger,
  ) {}

  async gateStatistics(
    input: {
      runId: string;
      round: number;
      spec: ModelSpec;
      weights: WeightSet;
      stainNormalization: StainNormalizationTarget | null;
      participants: readonly string[];
    },
    timeoutMs = CHANNEL_STATS_TIMEOUT_SECONDS * 1000,
  ): Promise<GateStatisticsOutcome> {
    const { runId, round, spec } = input;
    const ref = this.models.offer(encodeWeights(input.weights));
    const request = { runId, round, model: spec, weights: ref, stainNormalization: input.stainNormalization };
    const channels = filterCounts(spec);
    const refused: Record<string, string> = {};
    const used: { siteId: string; images: number }[] = [];
    const reports: GateStatistics[] = [];
    await Promise.all(
      input.participants.map(async (siteId) => {
        const ack = await this.sessions.send(siteId, PruningEvents.channelStats, request, timeoutMs);
        if (!ack.ok) return void (refused[siteId] = ack.error);
        const reason = await this.check(runId, round, siteId, ref.sha256, channels, ack);
        if (reason) return void (refused[siteId] = reason);
        used.push({ siteId, images: ack.images });
        reports.push({ images: ack.images, gates: ack.gates });
      }),
    );
    for (const [siteId, reason] of Object.entries(refused)) this.logger.event('warn', 'runs', 'channel statistics refused', { runId, round, siteId, reason });
    used.sort((a, b) => a.siteId.localeCompare(b.siteId));
    return { combined: reports.length > 0 ? aggregateGateStatistics(reports) : null, used, refused };
  }

  /** Why an answer cannot be used, or null. */
  private async check(
    runId: string,
    round: number,
    siteId: string,
    sha256: string,
    channels: readonly number[],
    ack: Extract<ChannelStatsAck, { ok: true }>,
  ): Promise<string | null> {
    if (ack.siteId !== siteId) return `answered as site ${ack.siteId}`;
    if (ack.sha256 !== sha256) return `sent statistics of model ${ack.sha256.slice(0, 12)}…, ${sha256.slice(0, 12)}… was asked about`;
    const shape = ack.gates.map((g) => g.length);
    if (shape.join() !== channels.join()) return `sent gates for blocks of [${shape.join(', ')}] channels, the model has [${channels.join(', ')}]`;
    const site = await this.store.getSite(siteId);
    if (!site?.signPublicKey) return 'no signing key is enrolled for the site';
    if (!verify(channelStatsSignedBytes(runId, round, siteId, sha256, ack.images, ack.gates), fromBase64(ack.signature), fromBase64(site.signPublicKey))) {
      return 'the signature does not verify with the enrolled signing key';
    }
    return null;
  }
}
