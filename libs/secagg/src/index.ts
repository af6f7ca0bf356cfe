/**
 * SecAgg+ secure aggregation (Bell et al. 2020, as in Flower): the coordinator learns only the sum
 * of the surviving sites' weighted, clipped updates, even when some sites drop out mid-round.
 *
 * One round (ids compare with plain string order; every list below is of site ids):
 * 1. Coordinator fixes `SecAggParams` (validateParams) and sends them. Each site:
 *    `new SecAggSiteRound({ siteId, signingSecretKey, params }).advertise()`. Coordinator:
 *    `verifyAdvertised` each answer; U1 = sites with valid keys; `neighbours =
 *    buildNeighbourhoods(U1, params.neighbourCount, seed)`; abort unless
 *    `neighbourDegree(|U1|, k) >= threshold`.
 * 2. Each site i: `shareKeys({ [j]: { advertised: keys of j, signPublicKey: j's Ed25519 key } })`
 *    for exactly `neighbours[i]`; it returns one sealed blob per neighbour. U2 = sites whose
 *    blobs arrived in time. Each site j in U2: `receiveShares({ [i]: blob i made for j })` for
 *    every neighbour i in U2 (and no one else).
 * 3. Each site in U2: `maskInput(delta, numSamples / scale)` with scale >= the samples of all of
 *    U1, so weights sum to <= 1 (the ring has headroom for sums up to ~2). Send it with
 *    `encodeMaskedInput`; coordinator: `masked.add(id, decodeMaskedInput(...))` on a `MaskedSum`.
 *    U3 = sites added.
 * 4. Each site i in U3: `revealShares({ survivors: neighbours[i] ∩ U3, dropped: neighbours[i] ∩ (U2 \ U3) })`
 *    (never i itself; i adds its own b share). Coordinator: `unmaskSum({ params, masked, neighbours,
 *    advertised, survivors: U3, dropped: U2 \ U3, revealed })` / (sum of U3's weights) = the
 *    weighted average of the clipped deltas, within `quantizationErrorBound(|U3|, clipRange)` / that sum.
 *
 * Each secret has k+1 holders (the neighbours and, for the self-mask seed, the site itself), so a
 * survivor may lose up to k+1-t neighbours and a dropped site needs t surviving neighbours.
 */
export * from './errors';
export type { SecAggParams } from './params';
export { MAX_NEIGHBOURS, MAX_VECTOR_LENGTH, defaultThreshold, fractionBitsFor, validateParams } from './params';
export type { AdvertisedKeys } from './advertise';
export { verifyAdvertised } from './advertise';
export { buildNeighbourhoods, neighbourDegree } from './neighbours';
export type { NeighbourKeys, RevealRequest, RevealedShares, SiteRoundOptions } from './site-round';
export { SecAggSiteRound } from './site-round';
export { MaskedSum } from './masked-sum';
export type { UnmaskInput } from './unmask';
export { unmaskSum } from './unmask';
export { quantizationErrorBound } from './ring';
export { decodeMaskedInput, encodeMaskedInput } from './messages';
export { combine, split } from './shamir';
export { SiteSecureAggregation } from './site-adapter';
