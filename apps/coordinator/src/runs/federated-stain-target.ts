import { Inject, Injectable } from '@nestjs/common';
import { StainNormalizationTarget } from '@histofed/fl-core';
import { MacenkoTarget, ReinhardStats, combineMacenkoTargets, combineReinhardStats, validateMacenkoTarget, validateReinhardStats } from '@histofed/data';
import { fromBase64, verify } from '@histofed/crypto';
import { StainEvents, StainStatisticsMethod, stainStatsSignedBytes } from '@histofed/protocol';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';

/** A site has this long to decode its training images and fit their stain statistics. */
export const STAIN_STATS_TIMEOUT_MS = 300_000;

/** What the sites' statistics combined into, and whose were used or refused (with the reason). */
export interface FederatedStainTargetOutcome {
  readonly target: StainNormalizationTarget | null;
  readonly used: { siteId: string; images: number }[];
  readonly refused: Record<string, string>;
}

/**
 * A federated stain target (issue 14): asks each participant for the stain statistics of its
 * training images (StainEvents.stats), checks each answer — the site's signature with its enrolled
 * key, the statistics themselves (unit, non-negative stain vectors, positive maxima; finite LAB
 * moments) — and combines the valid ones (libs/data: component-wise medians of the Macenko fits,
 * pixel-weighted Reinhard moments). A site that does not answer, or answers wrongly, is left out
 * with the reason; the caller decides whether enough remain.
 */
@Injectable()
export class FederatedStainTarget {
  constructor(
    private readonly sessions: SiteSessionsService,
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(LOGGER) private readonly logger: JsonLogger,
  ) {}

  async fit(runId: string, method: StainStatisticsMethod, participants: readonly string[], timeoutMs = STAIN_STATS_TIMEOUT_MS): Promise<FederatedStainTargetOutcome> {
    const refused: Record<string, string> = {};
    const used: { siteId: string; images: number }[] = [];
    const macenko: MacenkoTarget[] = [];
    const reinhard: ReinhardStats[] = [];
    await Promise.all(
      participants.map(async (siteId) => {
        const ack = await this.sessions.send(siteId, StainEvents.stats, { runId, method }, timeoutMs);
        if (!ack.ok) return void (refused[siteId] = ack.error);
        const reason = await this.check(runId, siteId, method, ack);
        if (reason) return void (refused[siteId] = reason);
        used.push({ siteId, images: ack.images });
        if (ack.stats.method === 'macenko') macenko.push(ack.stats as MacenkoTarget);
        else reinhard.push(ack.stats as ReinhardStats);
      }),
    );
    for (const [siteId, reason] of Object.entries(refused)) {
      this.logger.event('warn', 'runs', 'stain statistics refused', { runId, siteId, reason });
    }
    used.sort((a, b) => a.siteId.localeCompare(b.siteId));
    if (used.length === 0) return { target: null, used, refused };
    const target = method === 'macenko' ? combineMacenkoTargets(macenko) : combineReinhardStats(reinhard);
    return { target: target as unknown as StainNormalizationTarget, used, refused };
  }

  /** Why an answer cannot be used, or null. */
  private async check(
    runId: string,
    siteId: string,
    method: StainStatisticsMethod,
    ack: { siteId: string; images: number; stats: MacenkoTarget | ReinhardStats | { method: string }; signature: string },
  ): Promise<string | null> {
    if (ack.siteId !== siteId) return `answered as site ${ack.siteId}`;
    if (ack.stats.method !== method) return `sent ${ack.stats.method} statistics, ${method} were asked for`;
    const site = await this.store.getSite(siteId);
    if (!site?.signPublicKey) return 'no signing key is enrolled for the site';
    const stats = ack.stats as MacenkoTarget | ReinhardStats;
    if (!verify(stainStatsSignedBytes(runId, siteId, ack.images, stats), fromBase64(ack.signature), fromBase64(site.signPublicKey))) {
      return 'the signature does not verify with the enrolled signing key';
    }
    try {
      if (stats.method === 'macenko') validateMacenkoTarget(stats, `stain statistics of site ${siteId}`);
      else validateReinhardStats(stats, `stain statistics of site ${siteId}`);
    } catch (e) {
      return (e as Error).message;
    }
    return null;
  }
}
