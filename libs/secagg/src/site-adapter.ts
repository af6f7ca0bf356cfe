import { WeightSet, clipNorm, flatDelta } from '@histofed/fl-core';
import {
  SecAggAdvertiseAck,
  SecAggEvents,
  SecAggShareKeysAck,
  SecAggTask,
  SecAggUnmaskAck,
  secAggAdvertiseRequestSchema,
  secAggShareKeysRequestSchema,
  secAggUnmaskRequestSchema,
  validateMessage,
} from '@histofed/protocol';
import { encodeMaskedInput } from './messages';
import { SecAggSiteRound } from './site-round';

/** Rounds whose secrets a site keeps (a round's state is dropped once this many newer ones began). */
const KEPT_ROUNDS = 4;

const toBase64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const fromBase64 = (text: string) => new Uint8Array(Buffer.from(text, 'base64'));
const fail = (e: unknown) => ({ ok: false as const, error: (e as Error).message });
const decodeAll = (r: Record<string, string>) => Object.fromEntries(Object.entries(r).map(([id, v]) => [id, fromBase64(v)]));
const encodeAll = (r: Record<string, Uint8Array>) => Object.fromEntries(Object.entries(r).map(([id, v]) => [id, toBase64(v)]));

/**
 * The site's side of secure aggregation over the wire: keeps one SecAggSiteRound per round,
 * answers the coordinator's key-exchange and unmasking requests (libs/protocol secagg-messages)
 * and masks the trained update.
 * Every request is validated; anything out of order or inconsistent is refused with the reason
 * (the round then goes on without this site).
 */
export class SiteSecureAggregation {
  private readonly rounds = new Map<string, SecAggSiteRound>();

  constructor(
    private readonly siteId: string,
    /** The site's long-term Ed25519 secret key (64 bytes): signs each round's keys. */
    private readonly signingSecretKey: Uint8Array,
  ) {}

  /** Stage 1: fresh signed keys for (run, round). */
  advertise(raw: unknown): SecAggAdvertiseAck {
    const v = validateMessage(secAggAdvertiseRequestSchema, raw, 'secure aggregation advertise request');
    if (!v.ok) return { ok: false, error: v.reason };
    const { runId, round, params } = v.value;
    try {
      const state = new SecAggSiteRound({ siteId: this.siteId, signingSecretKey: this.signingSecretKey, params: { runId, round, ...params } });
      const keys = state.advertise();
      this.remember(runId, round, state);
      return { ok: true, keys: { cPublicKey: toBase64(keys.cPublicKey), sPublicKey: toBase64(keys.sPublicKey), signature: toBase64(keys.signature) } };
    } catch (e) {
      return fail(e);
    }
  }

  /** Stage 2: verify the neighbours' signed keys, seal one share pair for each. */
  shareKeys(raw: unknown): SecAggShareKeysAck {
    const v = validateMessage(secAggShareKeysRequestSchema, raw, 'secure aggregation share-keys request');
    if (!v.ok) return { ok: false, error: v.reason };
    try {
      const state = this.state(v.value.runId, v.value.round);
      const neighbours = Object.fromEntries(
        Object.entries(v.value.neighbours).map(([id, n]) => [
          id,
          {
            advertised: { cPublicKey: fromBase64(n.cPublicKey), sPublicKey: fromBase64(n.sPublicKey), signature: fromBase64(n.signature) },
            signPublicKey: fromBase64(n.signPublicKey),
          },
        ]),
      );
      return { ok: true, shares: encodeAll(state.shareKeys(neighbours)) };
    } catch (e) {
      return fail(e);
    }
  }

  /**
   * Stage 3: opens the neighbours' shares, then masks weight * clip(local - global), where the
   * update is first scaled to the run's norm bound (the coordinator cannot check it on a masked input).
   */
  mask(runId: string, round: number, task: SecAggTask, global: WeightSet, local: WeightSet, numSamples: number): Uint8Array {
    const state = this.state(runId, round);
    state.receiveShares(decodeAll(task.shares));
    if (numSamples > task.weightScale) {
      throw new Error(`secure aggregation: ${numSamples} training samples exceed the round's weight scale ${task.weightScale}`);
    }
    const delta = flatDelta(local, global);
    clipNorm(delta, task.maxUpdateNorm);
    return encodeMaskedInput(state.maskInput(delta, numSamples / task.weightScale));
  }

  /** Stage 4: reveal the shares the coordinator needs (never both kinds for one neighbour). */
  unmask(raw: unknown): SecAggUnmaskAck {
    const v = validateMessage(secAggUnmaskRequestSchema, raw, 'secure aggregation unmask request');
    if (!v.ok) return { ok: false, error: v.reason };
    try {
      const revealed = this.state(v.value.runId, v.value.round).revealShares(v.value);
      return { ok: true, b: encodeAll(revealed.b), s: encodeAll(revealed.s) };
    } catch (e) {
      return fail(e);
    }
  }

  /**
   * The coordinator's requests this adapter answers, by event name: register each on the site's
   * socket and acknowledge with what the handler returns.
   */
  handlers(): [event: string, answer: (raw: unknown) => SecAggAdvertiseAck | SecAggShareKeysAck | SecAggUnmaskAck][] {
    return [
      [SecAggEvents.advertise, (raw) => this.advertise(raw)],
      [SecAggEvents.shareKeys, (raw) => this.shareKeys(raw)],
      [SecAggEvents.unmask, (raw) => this.unmask(raw)],
    ];
  }

  private state(runId: string, round: number): SecAggSiteRound {
    const state = this.rounds.get(`${runId}/${round}`);
    if (!state) throw new Error(`secure aggregation: no keys for run ${runId} round ${round} on this site (restarted, or never advertised)`);
    return state;
  }

  private remember(runId: string, round: number, state: SecAggSiteRound): void {
    this.rounds.set(`${runId}/${round}`, state);
    while (this.rounds.size > KEPT_ROUNDS) this.rounds.delete(this.rounds.keys().next().value!);
  }
}
