import { Inject, Injectable } from '@nestjs/common';
import { ModelSpec, StainNormalizationTarget, WeightSet, encodeWeights, isSharedEnsembleMember, sha256Hex } from '@histofed/fl-core';
import { fromBase64, verify } from '@histofed/crypto';
import { WeightedMeanCombiner, chooseWeighting, spreadFittedWeights, weightingCandidates } from '@histofed/ml';
import {
  BlobRef,
  CalibrationTemperatures,
  DEFAULT_CHUNK_BYTES,
  ENSEMBLE_FIT_MAX_NLL_PER_IMAGE,
  EnsembleFitEvents,
  EnsembleWeightsNllReport,
  chunkCount,
  ensembleWeightsNllSignedBytes,
} from '@histofed/protocol';
import { ModelDistribution } from '../federation/model-distribution';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import type { WeightedEnsembleFitSummary } from '../persistence/records';

/** A member every site holds: the final global model, a snapshot or a boosted member (never 'global@<site>' or a personalized model). */
export const isSharedMember = isSharedEnsembleMember;

export interface EnsembleFitInput {
  readonly runId: string;
  readonly spec: ModelSpec;
  readonly stain: StainNormalizationTarget | null;
  /** Every ensemble member, in the manifest's order. */
  readonly members: readonly { readonly id: string; readonly weights: WeightSet }[];
  /** The temperatures the members' manifests carry (calibration), by member id; none: 1. */
  readonly temperatures: ReadonlyMap<string, CalibrationTemperatures>;
  readonly timeoutSeconds: number;
}

export interface EnsembleFitResult {
  /** The ensemble manifest's combiner (undefined: keep the mean). */
  readonly combiner?: WeightedMeanCombiner;
  readonly summary: WeightedEnsembleFitSummary;
}

// ---- pure parts -----------------------------------------------------------------------------

/** Why a site's answer cannot be used (beyond the schema and the signature), or null. */
export function ensembleFitAnswerProblem(
  siteId: string,
  memberShas: readonly string[],
  candidates: number,
  answer: { siteId: string; report: EnsembleWeightsNllReport },
): string | null {
  if (answer.siteId !== siteId) return `answered as site ${answer.siteId}`;
  const r = answer.report;
  if (r.members.length !== memberShas.length || r.members.some((s, i) => s !== memberShas[i])) return 'its numbers are about other members than those asked for';
  if (r.nll.length !== candidates) return `it reports ${r.nll.length} sums for ${candidates} candidates`;
  const most = r.count * ENSEMBLE_FIT_MAX_NLL_PER_IMAGE;
  const bad = r.nll.findIndex((v) => v > most);
  if (bad >= 0) return `its sum ${r.nll[bad]} for candidate ${bad} exceeds what ${r.count} images can give (${most})`;
  return null;
}

/** The weighting all sites' sums choose, with the pooled mean NLL of the uniform candidate and of the chosen one; null without an answer. */
export function combineWeightingAnswers(
  candidates: readonly (readonly number[])[],
  reports: readonly { readonly nll: readonly number[]; readonly count: number }[],
): { index: number; weights: number[]; images: number; meanNll: number | null; weightedNll: number } | null {
  if (reports.length === 0) return null;
  const sums = candidates.map((_, i) => reports.reduce((s, r) => s + r.nll[i], 0));
  const images = reports.reduce((s, r) => s + r.count, 0);
  const { index, weights } = chooseWeighting(candidates, sums);
  const m = candidates[0]?.length ?? 0;
  const uniform = candidates.findIndex((c) => c.every((w) => Math.abs(w - 1 / m) < 1e-9));
  return { index, weights, images, meanNll: uniform >= 0 ? sums[uniform] / images : null, weightedNll: sums[index] / images };
}

/** The weight of every ensemble member from the fitted weights of the shared ones (libs/ml spreadFittedWeights). */
export const ensembleWeights = spreadFittedWeights;

const round6 = (x: number | null) => (x === null ? null : Math.round(x * 1e6) / 1e6);

// ---- the exchange ---------------------------------------------------------------------------

/**
 * The ensemble's weighted mean, fitted with the sites after the calibration (issue 16, run option
 * ensemble.combiner 'weighted'). Offers every connected participant the shared members (the final
 * global model and the snapshots: every site received them as rounds' global models) and asks, for
 * each candidate weighting of them (libs/ml weightingCandidates), the summed stage-1 NLL of its
 * validation images under the weighted mean of the members' calibrated probabilities; adds the
 * sites' sums and picks the smallest (chooseWeighting). A site that does not answer in time, or
 * whose answer fails a check (signature, shapes, sums that cannot be), is left out with the reason.
 * Never fails the run: without a usable answer the ensemble keeps the unweighted mean.
 */
@Injectable()
export class FederatedEnsembleFit {
  constructor(
    private readonly sessions: SiteSessionsService,
    private readonly models: ModelDistribution,
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(LOGGER) private readonly logger: JsonLogger,
  ) {}

  async fit(input: EnsembleFitInput): Promise<EnsembleFitResult | undefined> {
    const releases: (() => void)[] = [];
    try {
      return await this.exchange(input, releases);
    } catch (e) {
      this.logger.event('error', 'runs', 'ensemble weighting failed', { runId: input.runId, error: (e as Error).message });
      return undefined;
    } finally {
      for (const release of releases) release();
    }
  }

  private async exchange(input: EnsembleFitInput, releases: (() => void)[]): Promise<EnsembleFitResult | undefined> {
    const { runId } = input;
    const all = input.members.map((m) => m.id);
    const shared = input.members.filter((m) => isSharedMember(m.id));
    if (shared.length < 2) {
      this.logger.event('warn', 'runs', 'ensemble weighting skipped: fewer than two members every site holds', { runId, members: all });
      return undefined;
    }
    const candidates = weightingCandidates(shared.length);
    const encoded = shared.map((m) => {
      const data = encodeWeights(m.weights);
      const ref: BlobRef = { sha256: sha256Hex(data), totalBytes: data.length, chunkBytes: DEFAULT_CHUNK_BYTES, count: chunkCount(data.length, DEFAULT_CHUNK_BYTES) };
      return { id: m.id, data, ref };
    });
    const shas = encoded.map((e) => e.ref.sha256);
    const sites = await this.participants(runId);
    const refused: Record<string, string> = {};
    const answers = new Map<string, EnsembleWeightsNllReport>();
    this.logger.event('info', 'runs', 'ensemble weighting started', { runId, members: shared.map((m) => m.id), candidates: candidates.length, sites });
    await Promise.all(
      sites.map(async (siteId) => {
        releases.push(this.models.offerFilesTo(siteId, encoded.map((e) => ({ sha256: e.ref.sha256, bytes: e.data.length, data: e.data })), DEFAULT_CHUNK_BYTES));
        const request = {
          runId,
          model: input.spec,
          stainNormalization: input.stain,
          members: encoded.map((e) => {
            const t = input.temperatures.get(e.id);
            return { id: e.id, model: e.ref, ...(t ? { temperature: t } : {}) };
          }),
          candidates,
        };
        const ack = await this.sessions.send(siteId, EnsembleFitEvents.nll, request, input.timeoutSeconds * 1000);
        if (!ack.ok) return void (refused[siteId] = ack.error);
        const problem =
          ensembleFitAnswerProblem(siteId, shas, candidates.length, ack) ??
          (await this.signatureProblem(siteId, ensembleWeightsNllSignedBytes(runId, siteId, ack.report), ack.signature));
        if (problem) return void (refused[siteId] = problem);
        answers.set(siteId, ack.report);
      }),
    );
    for (const [siteId, reason] of Object.entries(refused)) this.logger.event('warn', 'runs', 'ensemble weighting answer refused', { runId, siteId, reason });
    const answered = [...answers.keys()].sort();
    const chosen = combineWeightingAnswers(candidates, answered.map((s) => answers.get(s)!));
    const uniform = all.map(() => 1 / all.length);
    const weights = chosen ? ensembleWeights(all, shared.map((m) => m.id), chosen.weights) : uniform;
    const summary: WeightedEnsembleFitSummary = {
      combiner: chosen ? 'weighted-mean' : 'mean-probabilities',
      weights: Object.fromEntries(all.map((id, i) => [id, round6(weights[i])!])),
      fittedMembers: shared.map((m) => m.id),
      candidates: candidates.length,
      validation: { images: chosen?.images ?? 0, meanNll: round6(chosen?.meanNll ?? null), weightedNll: round6(chosen?.weightedNll ?? null) },
      sites: { answered, refused },
    };
    this.logger.event('info', 'runs', 'ensemble weighting finished', { runId, ...summary });
    if (!chosen) return { summary };
    const unshared = all.length - shared.length;
    return {
      combiner: {
        kind: 'weighted-mean',
        weights,
        fittedOn: `federated: ${answered.length} sites, ${chosen.images} validation images, ${candidates.length} candidate weightings of ${shared.map((m) => m.id).join(', ')} (stage-1 NLL)${unshared ? `; the other ${unshared} members keep the mean's share 1/${all.length} each` : ''}`.slice(0, 500),
      },
      summary,
    };
  }

  /** The run's completed rounds' participants that are connected now. */
  private async participants(runId: string): Promise<string[]> {
    const rounds = await this.store.listRounds(runId);
    const took = new Set(rounds.filter((r) => r.status === 'completed').flatMap((r) => r.participants));
    return (await this.sessions.available()).map((s) => s.siteId).filter((s) => took.has(s));
  }

  private async signatureProblem(siteId: string, bytes: Uint8Array, signature: string): Promise<string | null> {
    const site = await this.store.getSite(siteId);
    if (!site?.signPublicKey) return 'no signing key is enrolled for the site';
    return verify(bytes, fromBase64(signature), fromBase64(site.signPublicKey)) ? null : 'the signature does not verify with the enrolled signing key';
  }
}
