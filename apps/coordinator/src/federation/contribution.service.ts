import { Inject, Injectable } from '@nestjs/common';
import { encodeWeights, encodedWeightsLength, parameterCount } from '@histofed/fl-core';
import { BOX_OVERHEAD_LENGTH, fromBase64, open, verify } from '@histofed/crypto';
import { Ack, SealedUpdate, TaskFailed, decodeAnyUpdateEnvelope, updateSignedBytes } from '@histofed/protocol';
import { decodeMaskedInput } from '@histofed/secagg';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { ContributionKind, SiteRecord } from '../persistence/records';
import { checkContributionWeights, featureMomentsProblem } from './contribution-checks';
import { CoordinatorKeys } from './coordinator-keys';
import { RoundCollection } from './round-collection';

const key = (runId: string, round: number, kind: ContributionKind) => `${runId}/${round}/${kind}`;

/**
 * Receives sealed contributions: opens them, validates every part, records the outcome (accepted
 * or rejected with its reason) and hands accepted ones to the open round. Rejected updates never
 * reach an aggregate.
 */
/** Room for an update's header (ids, counts, metrics, feature moments of up to 128 x 128) in front of its weights. */
export const UPDATE_HEADER_ALLOWANCE_BYTES = 1024 * 1024;

/** A sealed update for `c`: its weights as encoded (a masked input is 4 bytes per value, no more), a header, the box tag. */
function expectedSealedUpdateBytes(c: RoundCollection): number {
  return encodedWeightsLength(c.baseWeights) + UPDATE_HEADER_ALLOWANCE_BYTES + BOX_OVERHEAD_LENGTH;
}

@Injectable()
export class ContributionService {
  private readonly open = new Map<string, RoundCollection>();
  /** Nonces being processed right now (the database holds every nonce already recorded). */
  private readonly inFlightNonces = new Set<string>();

  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    private readonly keys: CoordinatorKeys,
  ) {}

  openCollection(c: RoundCollection): void {
    this.open.set(key(c.runId, c.round, c.kind), c);
    this.expectedUploadBytes.set(c, expectedSealedUpdateBytes(c));
    void c.outcome.then(() => {
      this.open.delete(key(c.runId, c.round, c.kind));
      this.expectedUploadBytes.delete(c);
    });
  }

  /**
   * The largest sealed update `siteId` may upload now: what the open rounds it takes part in expect
   * (their model's encoded size, a header allowance and the box tag), 0 when none awaits it. An
   * authenticated site can thus make the coordinator reserve the run's model size per open upload,
   * not HISTOFED_MAX_MODEL_BYTES.
   */
  uploadLimitFor(siteId: string): number {
    let limit = 0;
    for (const [c, bytes] of this.expectedUploadBytes) if (c.participants.has(siteId)) limit = Math.max(limit, bytes);
    return limit;
  }

  private readonly expectedUploadBytes = new Map<RoundCollection, number>();

  /** Whether an open collection awaits `siteId`'s answer to this task (its progress reports are about a real task). */
  awaits(siteId: string, runId: string, round: number, kind: string): boolean {
    for (const c of this.open.values()) if (c.runId === runId && c.round === round && c.kind === kind && c.participants.has(siteId)) return true;
    return false;
  }

  siteLeft(siteId: string): void {
    for (const c of this.open.values()) c.markMissing(siteId, 'site disconnected');
  }

  /** `sealed` is the uploaded ciphertext the update names (its SHA-256 already checked against the message). */
  async receive(siteId: string, update: SealedUpdate, sealed: Uint8Array): Promise<Ack> {
    // An unsigned or forged message's nonce is not recorded: it must not block the site's real one.
    const reject = async (reason: string, nonce: string | null = update.nonce): Promise<Ack> => {
      const round = update.round;
      this.logger.event('warn', 'contributions', 'contribution rejected', {
        siteId,
        runId: update.runId,
        round,
        kind: update.kind,
        reason,
      });
      if (await this.store.getRun(update.runId)) {
        await this.store.addContribution({
          runId: update.runId,
          round,
          kind: update.kind,
          siteId,
          status: 'rejected',
          reason,
          numSamples: null,
          metrics: null,
          modelHash: null,
          bytes: sealed.length,
          nonce,
        });
      }
      return { ok: false, error: reason };
    };

    // Identity and freshness first, before anything else is looked at: a contribution must be
    // signed by the site's enrolled key, and its nonce never seen before (replays, also across
    // rounds, runs and coordinator restarts).
    const site = await this.store.getSite(siteId);
    if (!site?.signPublicKey || !verify(updateSignedBytes(update), fromBase64(update.signature), fromBase64(site.signPublicKey))) {
      return reject(`update from ${siteId}: signature does not verify with the site's enrolled key`, null);
    }
    const nonceKey = `${siteId}/${update.nonce}`;
    if (this.inFlightNonces.has(nonceKey) || (await this.store.hasContributionNonce(siteId, update.nonce))) {
      return reject(`update from ${siteId}: nonce already used (replayed contribution)`);
    }
    this.inFlightNonces.add(nonceKey);
    try {
      return await this.receiveFresh(site, update, sealed, reject);
    } finally {
      this.inFlightNonces.delete(nonceKey);
    }
  }

  private async receiveFresh(
    site: SiteRecord,
    update: SealedUpdate,
    sealed: Uint8Array,
    reject: (reason: string, nonce?: string | null) => Promise<Ack>,
  ): Promise<Ack> {
    const { siteId } = site;
    if (update.siteId !== siteId) return reject(`update claims site ${update.siteId} but comes from ${siteId}`);
    const collection = this.open.get(key(update.runId, update.round, update.kind));
    if (!collection) return reject(`no open ${update.kind} task for run ${update.runId} round ${update.round}`);
    const refusal = collection.refusal(siteId);
    if (refusal) return reject(refusal);

    // From here on the site holds a slot in this round: a bad update ends its participation
    // (explicit rejection) instead of leaving the round waiting for its deadline.
    const rejectParticipant = async (reason: string): Promise<Ack> => {
      collection.markMissing(siteId, `update rejected: ${reason}`);
      return reject(reason);
    };
    if (site.status !== 'approved') return rejectParticipant(`site ${siteId} is not approved`);
    let plaintext: Uint8Array;
    try {
      plaintext = open(
        { nonce: fromBase64(update.nonce), ciphertext: sealed },
        fromBase64(site.boxPublicKey),
        this.keys.box.secretKey,
        `update from ${siteId}`,
      );
    } catch (e) {
      return rejectParticipant((e as Error).message);
    }
    let envelope;
    try {
      envelope = decodeAnyUpdateEnvelope(plaintext, `update from ${siteId}`);
    } catch (e) {
      return rejectParticipant((e as Error).message);
    }
    if ('masked' in envelope !== (collection.secureSum !== undefined)) {
      return rejectParticipant(
        collection.secureSum ? 'this round uses secure aggregation: the update must be masked' : 'a masked update in a round without secure aggregation',
      );
    }
    const h = envelope.header;
    if (h.runId !== update.runId || h.round !== update.round || h.kind !== update.kind || h.siteId !== siteId) {
      return rejectParticipant('sealed header does not match the message (run, round, kind or site)');
    }
    if (h.baseModelHash !== collection.baseModelHash) {
      return rejectParticipant(`update was trained from model ${h.baseModelHash.slice(0, 12)}, round ${h.round} sent ${collection.baseModelHash.slice(0, 12)}`);
    }
    const recordAccepted = (modelHash: string | null) =>
      this.store.addContribution({
        runId: h.runId,
        round: h.round,
        kind: h.kind,
        siteId,
        status: 'accepted',
        reason: null,
        numSamples: h.numSamples,
        metrics: h.metrics,
        modelHash,
        bytes: sealed.length,
        nonce: update.nonce,
      });
    if ('masked' in envelope) {
      let masked: Uint32Array;
      try {
        masked = decodeMaskedInput(envelope.masked, collection.secureSum!.vectorLength, siteId);
      } catch (e) {
        return rejectParticipant((e as Error).message);
      }
      // Hold the site's place in the round while the record is written (the round cannot close in
      // between); then the input joins the sum together with the site joining the outcome.
      const late = collection.reserve(siteId);
      if (late) return reject(late);
      try {
        // Masked: nothing of it is stored, only that it arrived.
        await recordAccepted(null);
      } catch (e) {
        collection.release(siteId, `update could not be recorded: ${(e as Error).message}`);
        throw e;
      }
      collection.commitMasked(siteId, h.numSamples, masked, h.metrics);
      this.logger.event('info', 'contributions', 'masked contribution added to the secure sum', { siteId, runId: h.runId, round: h.round });
      return { ok: true };
    }
    const problem = checkContributionWeights(collection.layout, collection.baseWeights, envelope.weights, collection.maxUpdateNorm);
    if (problem) return rejectParticipant(problem);
    const momentsProblem = h.featureMoments ? featureMomentsProblem(h.featureMoments) : null;
    if (momentsProblem) return rejectParticipant(`feature moments: ${momentsProblem}`);
    // Recheck and hold the site's place: the collection may have closed while we were decrypting,
    // and must not close while the record is written (accepted in the database = in the aggregate).
    const late = collection.reserve(siteId);
    if (late) return reject(late);
    try {
      await recordAccepted(await this.store.putModel(encodeWeights(envelope.weights), parameterCount(envelope.weights)));
    } catch (e) {
      collection.release(siteId, `update could not be recorded: ${(e as Error).message}`);
      throw e;
    }
    collection.commit(siteId, h.numSamples, envelope.weights, h.metrics, h.featureMoments);
    this.logger.event('info', 'contributions', 'contribution accepted', {
      siteId,
      runId: h.runId,
      round: h.round,
      kind: h.kind,
      numSamples: h.numSamples,
      metrics: h.metrics,
    });
    return { ok: true };
  }

  async failed(siteId: string, failure: TaskFailed): Promise<Ack> {
    const c = this.open.get(key(failure.runId, failure.round, failure.kind));
    this.logger.event('warn', 'contributions', 'site reports a failed task', { siteId, ...failure });
    c?.markMissing(siteId, `site failed: ${failure.reason}`);
    return { ok: true };
  }
}
