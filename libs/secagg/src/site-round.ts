import { BoxKeyPair, CryptoError, SIGN_SECRET_KEY_LENGTH, boxSharedKey, generateBoxKeyPair, randomBytes, sign } from '@histofed/crypto';
import { AdvertisedKeys, verifyAdvertised } from './advertise';
import { SecAggError } from './errors';
import { openShare, sealShare } from './key-shares';
import { pairwiseSeed, pairwiseSign } from './masks';
import { advertiseSignedBytes } from './messages';
import { SecAggParams, checkSiteId, validateParams } from './params';
import { SEED_LENGTH, applyMask } from './prg';
import { quantize } from './ring';
import { split } from './shamir';

/** What a site learns about one neighbour before stage 2. */
export interface NeighbourKeys {
  readonly advertised: AdvertisedKeys;
  /** The neighbour's long-term Ed25519 public key, as registered with the coordinator. */
  readonly signPublicKey: Uint8Array;
}

/** Stage 4 request: neighbours whose masked input arrived, and neighbours that shared keys but sent no input. */
export interface RevealRequest {
  readonly survivors: readonly string[];
  readonly dropped: readonly string[];
}

/**
 * Stage 4 answer, by owner: this site's share of each survivor's self-mask seed (b, which includes
 * its own share of its own seed under its own id) and of each dropped site's s secret key (s).
 */
export interface RevealedShares {
  readonly b: Record<string, Uint8Array>;
  readonly s: Record<string, Uint8Array>;
}

export interface SiteRoundOptions {
  readonly siteId: string;
  /** The site's long-term 64-byte Ed25519 secret key (tweetnacl `sign`). */
  readonly signingSecretKey: Uint8Array;
  readonly params: SecAggParams;
}

type Stage = 'new' | 'advertised' | 'shared' | 'received' | 'masked';
const NEXT_CALL: Record<Stage, string> = {
  new: 'advertise',
  advertised: 'shareKeys',
  shared: 'receiveShares',
  received: 'maskInput',
  masked: 'revealShares',
};

interface HeldShares {
  readonly b: Uint8Array;
  readonly s: Uint8Array;
}

/**
 * One site's side of one secure-aggregation round. Call advertise, shareKeys, receiveShares,
 * maskInput, then revealShares (which may be repeated), in that order; a new round needs a new
 * instance. Secrets are wiped as soon as the protocol no longer needs them.
 */
export class SecAggSiteRound {
  readonly siteId: string;
  readonly params: SecAggParams;
  private readonly signingSecretKey: Uint8Array;
  private stage: Stage = 'new';
  private cKeys?: BoxKeyPair;
  private sKeys?: BoxKeyPair;
  private neighbours = new Set<string>();
  /** boxSharedKey (nacl.box.before) with each neighbour's c key: seals this site's shares and opens theirs. */
  private boxKeys = new Map<string, Uint8Array>();
  private selfSeed?: Uint8Array;
  /** This site's own share of its self-mask seed: it is a holder too, so fewer neighbours need survive. */
  private ownBShare?: Uint8Array;
  private pairSeeds = new Map<string, Uint8Array>();
  /** Shares this site holds for other sites, by owner: exactly the neighbours that completed stage 2. */
  private held = new Map<string, HeldShares>();
  private revealedB = new Set<string>();
  private revealedS = new Set<string>();

  constructor(opts: SiteRoundOptions) {
    checkSiteId(opts.siteId);
    this.siteId = opts.siteId;
    this.params = validateParams(opts.params);
    if (opts.signingSecretKey?.length !== SIGN_SECRET_KEY_LENGTH) {
      throw new SecAggError(`site ${opts.siteId}: signing secret key must be ${SIGN_SECRET_KEY_LENGTH} bytes (Ed25519)`);
    }
    this.signingSecretKey = new Uint8Array(opts.signingSecretKey);
  }

  /** Stage 1: fresh c and s key pairs for this round, signed. */
  advertise(): AdvertisedKeys {
    this.enter('new', 'advertise');
    this.cKeys = generateBoxKeyPair();
    this.sKeys = generateBoxKeyPair();
    const { runId, round } = this.params;
    const message = advertiseSignedBytes(runId, round, this.siteId, this.cKeys.publicKey, this.sKeys.publicKey);
    const signature = sign(message, this.signingSecretKey);
    this.signingSecretKey.fill(0);
    this.stage = 'advertised';
    return { cPublicKey: this.cKeys.publicKey.slice(), sPublicKey: this.sKeys.publicKey.slice(), signature };
  }

  /**
   * Stage 2: checks every neighbour's signature, then returns, per neighbour, the sealed pair of
   * shares (of this site's self-mask seed b and of its s secret key) for the coordinator to route.
   * Holders are this site and its neighbours in sorted id order, holder m getting x = m + 1; the
   * site keeps its own b share and discards its own s share (it never reveals its own s key).
   */
  shareKeys(neighbours: Readonly<Record<string, NeighbourKeys>>): Record<string, Uint8Array> {
    this.enter('advertised', 'shareKeys');
    const { runId, round, threshold, neighbourCount } = this.params;
    const ids = Object.keys(neighbours).sort();
    if (ids.length < threshold || ids.length > neighbourCount) {
      throw new SecAggError(
        `site ${this.siteId}: got ${ids.length} neighbours, needs between the threshold ${threshold} and neighbourCount ${neighbourCount}`,
      );
    }
    const pairSeeds = new Map<string, Uint8Array>();
    const boxKeys = new Map<string, Uint8Array>();
    for (const id of ids) {
      checkSiteId(id, 'neighbour id');
      if (id === this.siteId) throw new SecAggError(`site ${this.siteId}: listed as its own neighbour`);
      const { advertised, signPublicKey } = neighbours[id];
      verifyAdvertised(id, advertised, signPublicKey, runId, round);
      pairSeeds.set(id, pairwiseSeed(this.sKeys!.secretKey, advertised.sPublicKey, this.siteId, id, runId, round));
      try {
        boxKeys.set(id, boxSharedKey(advertised.cPublicKey, this.cKeys!.secretKey));
      } catch (e) {
        // A low-order c key would make the box key public: the shares sent to it readable by anyone.
        if (e instanceof CryptoError) throw new SecAggError(`sites ${this.siteId} and ${id}: the c public key of ${id} is degenerate`);
        throw e;
      }
    }

    this.selfSeed = randomBytes(SEED_LENGTH);
    const holders = [...ids, this.siteId].sort();
    // split hands out x = 1..n in order, so holder m gets x = m + 1.
    const bShares = split(this.selfSeed, threshold, holders.length);
    const sShares = split(this.sKeys!.secretKey, threshold, holders.length);
    const sealed: Record<string, Uint8Array> = {};
    holders.forEach((id, m) => {
      if (id === this.siteId) return;
      const payload = { from: this.siteId, to: id, runId, round, bShare: bShares[m], sShare: sShares[m] };
      sealed[id] = sealShare(payload, boxKeys.get(id)!);
    });
    this.ownBShare = bShares[holders.indexOf(this.siteId)];
    this.sKeys!.secretKey.fill(0);
    this.cKeys!.secretKey.fill(0);
    for (const share of sShares) share.fill(0);
    this.neighbours = new Set(ids);
    this.pairSeeds = pairSeeds;
    this.boxKeys = boxKeys;
    this.stage = 'shared';
    return sealed;
  }

  /**
   * Stage 2, receiving end: the shares the coordinator routed here, by sender. The senders are the
   * neighbours that completed stage 2; only they are masked with in stage 3, so the set must be
   * every neighbour in U2 (a sender left out here would still mask with this site, and the sum
   * would not unmask). On an error nothing is kept; the site should leave the round.
   */
  receiveShares(shares: Readonly<Record<string, Uint8Array>>): void {
    this.enter('shared', 'receiveShares');
    const { runId, round, threshold } = this.params;
    const held = new Map<string, HeldShares>();
    for (const from of Object.keys(shares).sort()) {
      const boxKey = this.boxKeys.get(from);
      if (!boxKey) throw new SecAggError(`site ${this.siteId}: got shares from ${from}, which is not its neighbour`);
      const { bShare, sShare } = openShare(shares[from], { from, to: this.siteId, runId, round }, boxKey);
      held.set(from, { b: bShare, s: sShare });
    }
    // The holders of this site's b that can survive are itself and the senders.
    if (held.size + 1 < threshold) {
      throw new SecAggError(
        `site ${this.siteId}: shares arrived from only ${held.size} neighbours, so with its own share it is below the threshold ${threshold}; its input could never be unmasked`,
      );
    }
    for (const key of this.boxKeys.values()) key.fill(0);
    this.boxKeys.clear();
    this.held = held;
    this.stage = 'received';
  }

  /**
   * Stage 3: q = round(weight * clip(delta) * 2^f) mod 2^32, plus PRG(b), plus or minus the pair
   * mask of every neighbour that completed stage 2. `weight` = numSamples / the coordinator's scale.
   */
  maskInput(delta: Float32Array, weight: number): Uint32Array {
    this.enter('received', 'maskInput');
    const { vectorLength, clipRange } = this.params;
    if (delta.length !== vectorLength) {
      throw new SecAggError(`site ${this.siteId}: delta has ${delta.length} values, params.vectorLength is ${vectorLength}`);
    }
    let masked: Uint32Array;
    try {
      masked = quantize(delta, weight, clipRange);
    } catch (e) {
      if (e instanceof SecAggError) throw new SecAggError(`site ${this.siteId}: ${e.message}`);
      throw e;
    }
    applyMask(masked, this.selfSeed!, 1);
    for (const peer of this.held.keys()) applyMask(masked, this.pairSeeds.get(peer)!, pairwiseSign(this.siteId, peer));
    this.selfSeed!.fill(0);
    for (const seed of this.pairSeeds.values()) seed.fill(0);
    this.pairSeeds.clear();
    this.stage = 'masked';
    return masked;
  }

  /**
   * Stage 4: b shares of the survivors (itself included), s shares of the dropped. `survivors` and
   * `dropped` list neighbours only, never this site. Refuses (all-or-nothing) anything
   * that could expose one neighbour's input: both kinds for the same neighbour, now or across
   * calls, fewer survivors (this site included) than the threshold, or ids it holds no share for.
   */
  revealShares(request: RevealRequest): RevealedShares {
    this.enter('masked', 'revealShares');
    const { survivors, dropped } = request;
    const where = `site ${this.siteId}`;
    const survivorSet = new Set(survivors);
    const droppedSet = new Set(dropped);
    if (survivorSet.size !== survivors.length || droppedSet.size !== dropped.length) throw new SecAggError(`${where}: reveal request lists an id twice`);
    for (const id of survivors) {
      if (droppedSet.has(id)) throw new SecAggError(`${where}: ${id} is listed both as survivor and as dropped`);
    }
    for (const id of [...survivors, ...dropped]) {
      if (!this.neighbours.has(id)) throw new SecAggError(`${where}: ${id} is not its neighbour`);
      if (!this.held.has(id)) throw new SecAggError(`${where}: holds no share of ${id} (${id} did not complete stage 2 here)`);
    }
    if (survivors.length + 1 < this.params.threshold) {
      throw new SecAggError(`${where}: only ${survivors.length + 1} survivors including itself, below the threshold ${this.params.threshold}`);
    }
    for (const id of survivors) {
      if (this.revealedS.has(id)) throw new SecAggError(`${where}: already revealed the s share of ${id}; refuses its b share`);
    }
    for (const id of dropped) {
      if (this.revealedB.has(id)) throw new SecAggError(`${where}: already revealed the b share of ${id}; refuses its s share`);
    }
    const b: Record<string, Uint8Array> = { [this.siteId]: this.ownBShare!.slice() };
    const s: Record<string, Uint8Array> = {};
    for (const id of survivors) {
      this.revealedB.add(id);
      b[id] = this.held.get(id)!.b.slice();
    }
    for (const id of dropped) {
      this.revealedS.add(id);
      s[id] = this.held.get(id)!.s.slice();
    }
    return { b, s };
  }

  private enter(stage: Stage, call: string): void {
    if (this.stage !== stage) {
      throw new SecAggError(`site ${this.siteId}: ${call} called out of order (the next step is ${NEXT_CALL[this.stage]})`);
    }
  }
}
