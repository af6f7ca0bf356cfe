import { x25519PublicKey } from '@histofed/crypto';
import { AdvertisedKeys } from './advertise';
import { SecAggError } from './errors';
import { SHARE_LENGTH } from './key-shares';
import { MaskedSum } from './masked-sum';
import { pairwiseSeed, pairwiseSign } from './masks';
import { SecAggParams, validateParams } from './params';
import { applyMask } from './prg';
import { dequantize } from './ring';
import { combine } from './shamir';
import type { RevealedShares } from './site-round';

export interface UnmaskInput {
  readonly params: SecAggParams;
  /** The masked inputs of exactly the survivors. */
  readonly masked: MaskedSum;
  /** The graph of the round, as built by `buildNeighbourhoods` over U1. */
  readonly neighbours: Readonly<Record<string, readonly string[]>>;
  /** Stage-1 keys by site; only the s public keys are used. */
  readonly advertised: Readonly<Record<string, Pick<AdvertisedKeys, 'sPublicKey'>>>;
  /** U3: the sites whose masked input was added. */
  readonly survivors: readonly string[];
  /** U2 \ U3: sites whose stage-2 shares were delivered but whose masked input never came. */
  readonly dropped: readonly string[];
  /** Stage-4 answers, by the survivor that revealed them. */
  readonly revealed: Readonly<Record<string, RevealedShares>>;
}

/**
 * Removes every mask from the survivors' masked sum and returns sum over survivors of
 * weight * clip(delta), per coordinate, as float64 (exact dequantization; the error against the
 * real-valued sum is at most `quantizationErrorBound(survivors.length, clipRange)`). The caller
 * divides by the survivors' weight sum. Pure: `masked` is left untouched.
 */
export function unmaskSum(input: UnmaskInput): Float64Array {
  const { masked, neighbours, advertised, survivors, dropped, revealed } = input;
  const { runId, round, threshold, clipRange, vectorLength } = validateParams(input.params);
  if (masked.vectorLength !== vectorLength) {
    throw new SecAggError(`masked sum has length ${masked.vectorLength}, params.vectorLength is ${vectorLength}`);
  }
  const survivorSet = new Set(survivors);
  const droppedSet = new Set(dropped);
  if (survivorSet.size !== survivors.length || droppedSet.size !== dropped.length) throw new SecAggError('unmask: survivors and dropped must not repeat ids');
  if (survivors.length === 0) throw new SecAggError('unmask: no survivors');
  const contributors = masked.siteIds;
  if (contributors.length !== survivorSet.size || contributors.some((id) => !survivorSet.has(id))) {
    throw new SecAggError(`unmask: survivors [${[...survivors].sort().join(', ')}] differ from the sites in the masked sum [${contributors.join(', ')}]`);
  }
  for (const id of [...survivors, ...dropped]) {
    if (droppedSet.has(id) && survivorSet.has(id)) throw new SecAggError(`site ${id}: listed both as survivor and as dropped`);
    if (!neighbours[id]) throw new SecAggError(`site ${id}: has no neighbourhood`);
    if (!advertised[id]?.sPublicKey) throw new SecAggError(`site ${id}: has no advertised keys`);
  }

  const bShares = new Map<string, Uint8Array[]>(survivors.map((id) => [id, []]));
  const sShares = new Map<string, Uint8Array[]>(dropped.map((id) => [id, []]));
  const collect = (holder: string, kind: 'b' | 's', record: Record<string, Uint8Array>, into: Map<string, Uint8Array[]>) => {
    for (const [owner, share] of Object.entries(record ?? {})) {
      const list = into.get(owner);
      if (!list) throw new SecAggError(`site ${holder}: revealed a ${kind} share of ${owner}, which is not ${kind === 'b' ? 'a survivor' : 'dropped'}`);
      // Holder m of the sorted [owner, ...neighbours] got x = m + 1; only b has a share held by its owner.
      const isHolder = neighbours[owner].includes(holder) || (kind === 'b' && holder === owner);
      if (!isHolder) throw new SecAggError(`site ${holder}: revealed a ${kind} share of ${owner}, which is not its neighbour`);
      const x = [...neighbours[owner], owner].sort().indexOf(holder) + 1;
      if (share.length !== SHARE_LENGTH || share[0] !== x) {
        throw new SecAggError(`site ${holder}: its ${kind} share of ${owner} must be ${SHARE_LENGTH} bytes with x = ${x}`);
      }
      list.push(share);
    }
  };
  for (const [holder, shares] of Object.entries(revealed)) {
    if (!survivorSet.has(holder)) throw new SecAggError(`site ${holder}: revealed shares but is not a survivor`);
    collect(holder, 'b', shares.b, bShares);
    collect(holder, 's', shares.s, sShares);
  }

  // A dropped site's pair masks only matter where a surviving neighbour added them.
  const danglingPeers = new Map(dropped.map((d) => [d, neighbours[d].filter((u) => survivorSet.has(u))]));
  const needS = dropped.filter((d) => danglingPeers.get(d)!.length > 0);
  const short = [
    ...survivors.filter((id) => bShares.get(id)!.length < threshold).map((id) => `site ${id}: only ${bShares.get(id)!.length} of ${threshold} shares of its self-mask seed`),
    ...needS.filter((id) => sShares.get(id)!.length < threshold).map((id) => `site ${id}: only ${sShares.get(id)!.length} of ${threshold} shares of its s key`),
  ];
  if (short.length > 0) throw new SecAggError(`${short.join('; ')} (below the threshold ${threshold}; the round cannot be unmasked)`);

  // Rebuild and check every secret before the costly mask removal.
  const selfSeeds = survivors.map((id) => combine(bShares.get(id)!, threshold, `site ${id}: self-mask seed`));
  const sKeys = needS.map((d) => {
    const secretKey = combine(sShares.get(d)!, threshold, `site ${d}: s key`);
    if (!Buffer.from(x25519PublicKey(secretKey)).equals(Buffer.from(advertised[d].sPublicKey))) {
      throw new SecAggError(`site ${d}: the rebuilt s key does not match its advertised public key (a revealed share is wrong)`);
    }
    return secretKey;
  });

  const sum = masked.ringSum();
  for (const seed of selfSeeds) applyMask(sum, seed, -1);
  needS.forEach((d, i) => {
    for (const u of danglingPeers.get(d)!) {
      const seed = pairwiseSeed(sKeys[i], advertised[u].sPublicKey, d, u, runId, round);
      // u's mask is left unpaired; adding what d would have added cancels it.
      applyMask(sum, seed, pairwiseSign(d, u));
      seed.fill(0);
    }
  });
  for (const secret of [...selfSeeds, ...sKeys]) secret.fill(0);
  return dequantize(sum, clipRange);
}
