import { Inject, Injectable } from '@nestjs/common';
import { SiteResult } from '@histofed/aggregation';
import { fromBase64, toBase64 } from '@histofed/crypto';
import { WeightSet, applyFlatDelta, parameterCount } from '@histofed/fl-core';
import {
  CoordinatorToSiteAck,
  CoordinatorToSiteEvent,
  CoordinatorToSitePayload,
  SECAGG_MIN_NEIGHBOURS,
  SecAggEvents,
  SecAggParamsMessage,
  SecAggTask,
  defaultThreshold,
  thresholdFits,
} from '@histofed/protocol';
import {
  AdvertisedKeys,
  MaskedSum,
  RevealedShares,
  SecAggParams,
  buildNeighbourhoods,
  neighbourDegree,
  unmaskSum,
  verifyAdvertised,
} from '@histofed/secagg';
import { CollectionOutcome } from '../federation/round-collection';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { LIVE_EVENTS, LiveEvents, SecAggStage } from '../dashboard/live-events';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { SecureAggregationConfig } from '../persistence/records';

/** The neighbourhood size SecAgg+ suggests: O(log n), here 2 log2 n, at least 4 (complete graph below 6 sites). */
export function defaultNeighbours(siteCount: number): number {
  return Math.min(siteCount - 1, Math.max(4, 2 * Math.ceil(Math.log2(siteCount))));
}

/** The collection step of a secure round: sends each site its train task (with `secagg`), sums masked inputs. */
export type SecureCollect = (sites: string[], taskFor: (siteId: string) => SecAggTask, sum: MaskedSum) => Promise<CollectionOutcome>;

export interface SecureRoundInput {
  readonly runId: string;
  readonly round: number;
  readonly seed: number;
  readonly minSites: number;
  readonly maxUpdateNorm: number;
  readonly config: SecureAggregationConfig;
  readonly participants: readonly string[];
  /** Training samples each participant announced (its weight is numSamples / their total). */
  readonly trainSamples: Readonly<Record<string, number>>;
  readonly global: WeightSet;
  readonly collect: SecureCollect;
}

export type SecureRoundOutcome =
  | { readonly ok: true; readonly result: SiteResult; readonly outcome: CollectionOutcome; readonly summary: Record<string, unknown> }
  | { readonly ok: false; readonly reason: string; readonly outcome?: CollectionOutcome };

/**
 * Drives one SecAgg+ round (libs/secagg): advertise keys, share keys, train and send masked
 * inputs, unmask. The coordinator routes sealed shares it cannot open and adds masked inputs as
 * they arrive (MaskedSum, one running vector); the only model it ever decodes is the survivors'
 * weighted sum, returned as one combined result for the run's strategy. A stage that leaves too few
 * sites ends the round with the reason; the orchestrator retries or fails the run.
 */
@Injectable()
export class SecureAggregationRound {
  constructor(
    private readonly sessions: SiteSessionsService,
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    @Inject(LIVE_EVENTS) private readonly live: LiveEvents,
  ) {}

  async run(input: SecureRoundInput): Promise<SecureRoundOutcome> {
    const { runId, round, config } = input;
    const timeoutMs = config.stageTimeoutSeconds * 1000;
    const n = input.participants.length;
    // k neighbours per site (>= 2: run configs with secure aggregation need >= 3 sites), and t, the
    // shares that rebuild a secret, a strict majority of a secret's k + 1 holders (the site keeps one).
    const k = Math.max(SECAGG_MIN_NEIGHBOURS, Math.min(config.neighbours ?? defaultNeighbours(n), n - 1));
    const threshold = config.threshold ?? defaultThreshold(k);
    if (!thresholdFits(k, threshold)) {
      return { ok: false, reason: `secure aggregation: threshold ${threshold} does not fit the ${k} neighbours ${n} sites allow (needs (k+1)/2 < t <= k)` };
    }
    const wire: SecAggParamsMessage = { neighbourCount: k, threshold, clipRange: config.clipRange, vectorLength: parameterCount(input.global) };
    const params: SecAggParams = { runId, round, ...wire };
    const log = (msg: string, fields: Record<string, unknown>) => this.logger.event('info', 'secagg', msg, { runId, round, ...fields });
    // Issue 17: each stage shown live on the dashboard, with the sites asked.
    const announce = (stage: SecAggStage, sites: readonly string[]) => this.live.publish({ type: 'secagg', runId, round, stage, sites: [...sites] });
    const enough = (stage: string, have: readonly string[]): string | null => {
      const needed = Math.max(input.minSites, threshold);
      return have.length >= needed ? null : `secure aggregation stage ${stage}: ${have.length} of ${n} sites answered, ${needed} needed`;
    };

    // Stage 1: fresh per-round keys, signed with each site's enrolled key.
    const advertised: Record<string, AdvertisedKeys> = {};
    const signKeys: Record<string, string> = {};
    announce('advertise', input.participants);
    await this.stage(input.participants, async (siteId) => {
      const site = await this.store.getSite(siteId);
      if (!site?.signPublicKey) throw new Error(`site ${siteId} has no enrolled signing key`);
      const ack = await this.ask(siteId, SecAggEvents.advertise, { runId, round, params: wire }, timeoutMs);
      const keys = { cPublicKey: fromBase64(ack.keys.cPublicKey), sPublicKey: fromBase64(ack.keys.sPublicKey), signature: fromBase64(ack.keys.signature) };
      verifyAdvertised(siteId, keys, fromBase64(site.signPublicKey), runId, round);
      advertised[siteId] = keys;
      signKeys[siteId] = site.signPublicKey;
    }, 'advertise');
    const u1 = Object.keys(advertised).sort();
    const short1 = enough('1 (advertise keys)', u1);
    if (short1) return { ok: false, reason: short1 };
    if (neighbourDegree(u1.length, k) < threshold) {
      return { ok: false, reason: `secure aggregation: ${u1.length} sites give ${neighbourDegree(u1.length, k)} neighbours each, below the threshold ${threshold}` };
    }
    const graph = buildNeighbourhoods(u1, k, `${input.seed}/${runId}/${round}`);
    log('keys advertised', { sites: u1, neighbours: k, threshold });

    // Stage 2: each site seals Shamir shares of its secrets to each neighbour; routed, never opened here.
    const sharesFrom: Record<string, Record<string, string>> = {};
    announce('share-keys', u1);
    await this.stage(u1, async (siteId) => {
      const neighbours = Object.fromEntries(
        graph[siteId].map((j) => [
          j,
          {
            cPublicKey: toBase64(advertised[j].cPublicKey),
            sPublicKey: toBase64(advertised[j].sPublicKey),
            signature: toBase64(advertised[j].signature),
            signPublicKey: signKeys[j],
          },
        ]),
      );
      const ack = await this.ask(siteId, SecAggEvents.shareKeys, { runId, round, neighbours }, timeoutMs);
      const expected = [...graph[siteId]].sort().join(',');
      if (Object.keys(ack.shares).sort().join(',') !== expected) throw new Error(`site ${siteId} sent shares for other sites than its neighbours`);
      sharesFrom[siteId] = ack.shares;
    }, 'share keys');
    const u2 = Object.keys(sharesFrom).sort();
    const short2 = enough('2 (share keys)', u2);
    if (short2) return { ok: false, reason: short2 };
    log('keys shared', { sites: u2 });

    // Stage 3: train; each site masks its weighted, clipped update. Weights: numSamples / weightScale.
    const weightScale = u2.reduce((s, id) => s + Math.max(1, input.trainSamples[id] ?? 0), 0);
    const sum = new MaskedSum(wire.vectorLength);
    const taskFor = (siteId: string): SecAggTask => ({
      weightScale,
      params: wire,
      maxUpdateNorm: input.maxUpdateNorm,
      shares: Object.fromEntries(graph[siteId].filter((i) => sharesFrom[i]).map((i) => [i, sharesFrom[i][siteId]])),
    });
    announce('masked-updates', u2);
    const outcome = await input.collect(u2, taskFor, sum);
    const u3 = outcome.results.map((r) => r.siteId).sort();
    const dropped = u2.filter((id) => !u3.includes(id));
    const short3 = enough('3 (masked updates)', u3);
    if (short3) return { ok: false, reason: `${short3}: ${JSON.stringify(outcome.missing)}`, outcome };
    log('masked updates summed', { survivors: u3, dropped });

    // Stage 4: survivors reveal b shares of survivors and s shares of dropped neighbours.
    const revealed: Record<string, RevealedShares> = {};
    announce('unmask', u3);
    await this.stage(u3, async (siteId) => {
      const request = {
        runId,
        round,
        survivors: graph[siteId].filter((j) => u3.includes(j)),
        dropped: graph[siteId].filter((j) => dropped.includes(j)),
      };
      const ack = await this.ask(siteId, SecAggEvents.unmask, request, timeoutMs);
      const decode = (r: Record<string, string>) => Object.fromEntries(Object.entries(r).map(([id, v]) => [id, fromBase64(v)]));
      revealed[siteId] = { b: decode(ack.b), s: decode(ack.s) };
    }, 'unmask');

    let total: Float64Array;
    try {
      total = unmaskSum({ params, masked: sum, neighbours: graph, advertised, survivors: u3, dropped, revealed });
    } catch (e) {
      return { ok: false, reason: `secure aggregation could not unmask the sum: ${(e as Error).message}`, outcome };
    }
    const numSamples = outcome.results.reduce((s, r) => s + r.numSamples, 0);
    const weightSum = numSamples / weightScale;
    const weights = applyFlatDelta(input.global, total, 1 / weightSum);
    log('sum unmasked', { survivors: u3, dropped, revealedBy: Object.keys(revealed).sort() });
    return {
      ok: true,
      outcome,
      result: { siteId: `secure-sum(${u3.join(',')})`, numSamples, weights, metrics: {} },
      summary: { neighbours: k, threshold, advertised: u1.length, shared: u2.length, survivors: u3, dropped, revealedBy: Object.keys(revealed).length },
    };
  }

  /** One stage's request to one site: its validated answer, or an error (refused, no answer, malformed). */
  private async ask<E extends CoordinatorToSiteEvent>(
    siteId: string,
    event: E,
    payload: CoordinatorToSitePayload<E>,
    timeoutMs: number,
  ): Promise<Extract<CoordinatorToSiteAck<E>, { ok: true }>> {
    const ack = await this.sessions.send(siteId, event, payload, timeoutMs);
    if (!ack.ok) throw new Error(ack.error);
    return ack as Extract<CoordinatorToSiteAck<E>, { ok: true }>;
  }

  /** Runs `step` for every site concurrently; a site whose step fails is left out (logged). */
  private async stage(sites: readonly string[], step: (siteId: string) => Promise<void>, name: string): Promise<void> {
    await Promise.all(
      sites.map((siteId) =>
        step(siteId).catch((e: unknown) => this.logger.event('warn', 'secagg', `site left at stage "${name}"`, { siteId, reason: (e as Error).message })),
      ),
    );
  }
}
