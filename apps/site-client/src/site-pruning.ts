import { StainNormalizationTarget, ValidationError, decodeWeights, sha256Hex } from '@histofed/fl-core';
import { buildModelAsync, convStructure, seGateStatistics, setWeights } from '@histofed/ml';
import {
  ChannelStatsAck,
  PruningEvents,
  RefusalCode,
  SiteSigner,
  channelStatsAckSchema,
  channelStatsRequestSchema,
  channelStatsSignedBytes,
  refusal,
  validateMessage,
} from '@histofed/protocol';
import { toBase64 } from '@histofed/crypto';
import type { Outbox } from './outbox';
import type { ModelFetcher } from './site-calibration';
import type { SiteData } from './site-data';
import type { SiteLogger } from './site-logger';

/** A request this site cannot answer for a reason of the request itself (not a failure here). */
class Unanswerable extends Error {}

/**
 * The site's side of federated SE-guided channel pruning (issue 18): for the coordinator's
 * coordinator:channel-stats question, the mean squeeze-excitation gate of every channel of every
 * conv block of the current global model over the site's training images (libs/ml
 * seGateStatistics), and their count — numbers only, signed, recorded in the outbox as sent.
 *
 * The training images are read as a round reads them (the request's spec and stain
 * normalization), without augmentation: one row per training image (per tile row for a tiled
 * spec), never an augmented copy.
 */
export class SitePruning {
  constructor(
    private readonly siteId: string,
    private readonly data: SiteData,
    private readonly signer: SiteSigner,
    private readonly outbox: Outbox,
    private readonly logger: SiteLogger,
    private readonly fetchModel: ModelFetcher,
  ) {}

  async answer(raw: unknown): Promise<ChannelStatsAck> {
    const v = validateMessage(channelStatsRequestSchema, raw, PruningEvents.channelStats);
    if (!v.ok) return refusal(v.reason, 'invalid-message');
    const r = v.value;
    try {
      const { squeezeExcite, kind } = convStructure(r.model);
      if (!squeezeExcite) throw new Unanswerable(`a ${kind} has no SE gates`);
      const train = await this.data.train({ spec: r.model, stain: r.stainNormalization as StainNormalizationTarget | null });
      if (train.count === 0) throw new Error('the site has no training images');
      const bytes = await this.fetchModel(r.weights, `global model ${r.weights.sha256.slice(0, 12)} (run ${r.runId}, channel statistics)`);
      const sha256 = sha256Hex(bytes);
      if (sha256 !== r.weights.sha256) throw new Error(`the model's bytes have SHA-256 ${sha256}, the request names ${r.weights.sha256}`);
      const weights = decodeWeights(bytes, 'global model');
      const model = await buildModelAsync(r.model, 1, { dir: this.data.backboneDir });
      let stats;
      try {
        setWeights(model, weights);
        stats = seGateStatistics(model, r.model, train);
      } finally {
        model.dispose();
      }
      const { images, gates } = stats;
      const signature = toBase64(this.signer.sign(channelStatsSignedBytes(r.runId, r.round, this.siteId, r.weights.sha256, images, gates)));
      const answer = { ok: true as const, siteId: this.siteId, sha256: r.weights.sha256, images, gates: gates.map((g) => [...g]), signature };
      const checked = channelStatsAckSchema.safeParse(answer);
      if (!checked.success) throw new Error(`the statistics are out of bounds: ${checked.error.issues[0]?.path.join('.')}: ${checked.error.issues[0]?.message}`);
      await this.outbox.record(PruningEvents.channelStats, { runId: r.runId, ...answer });
      this.logger.event('info', 'channel statistics sent', { runId: r.runId, round: r.round, images, blocks: gates.length, channels: gates.map((g) => g.length) });
      return answer;
    } catch (e) {
      const error = (e as Error).message;
      // The request's model cannot be answered (a kind without SE gates, not a compact CNN): the coordinator's mistake.
      const code: RefusalCode = e instanceof Unanswerable || (e instanceof ValidationError && error.startsWith('model.kind:')) ? 'invalid-message' : 'internal-error';
      this.logger.event('warn', 'channel statistics not sent', { runId: r.runId, round: r.round, error });
      return refusal(`channel statistics of site ${this.siteId}: ${error}`.slice(0, 2000), code);
    }
  }
}
