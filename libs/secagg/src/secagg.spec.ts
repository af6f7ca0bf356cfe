import nacl from 'tweetnacl';
import {
  AdvertisedKeys,
  MaskedSum,
  RevealedShares,
  SecAggError,
  SecAggParams,
  SecAggSiteRound,
  buildNeighbourhoods,
  decodeMaskedInput,
  defaultThreshold,
  encodeMaskedInput,
  neighbourDegree,
  quantizationErrorBound,
  unmaskSum,
  verifyAdvertised,
} from './index';
import { sealShare } from './key-shares';
import { advertiseSignedBytes } from './messages';
import { quantize } from './ring';
import { split } from './shamir';

// Module-scope aliases: global lookups in hot loops are slow inside Jest's vm sandbox.
const { abs, imul, max, min } = Math;

/** mulberry32: reproducible test data. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = imul(t ^ (t >>> 15), t | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

interface Round {
  readonly ids: string[];
  readonly params: SecAggParams;
  readonly sites: Map<string, SecAggSiteRound>;
  readonly signKeys: Map<string, nacl.SignKeyPair>;
  readonly advertised: Record<string, AdvertisedKeys>;
  readonly neighbours: Record<string, string[]>;
  readonly deltas: Map<string, Float32Array>;
  readonly samples: Map<string, number>;
  /** numSamples / scale is each site's weight; scale = all participants' samples, so weights sum to 1. */
  readonly scale: number;
}

interface RoundSpec {
  n: number;
  k: number;
  vectorLength: number;
  clipRange?: number;
  /** Deltas are uniform in ±spread. */
  spread?: number;
  seed?: number;
}

/** Stages 1 and 2 for every site, as the coordinator would drive them. */
function startRound({ n, k, vectorLength, clipRange = 1, spread = 0.8, seed = 1 }: RoundSpec): Round {
  const rand = random(seed);
  const ids = Array.from({ length: n }, (_, i) => `hospital-${String.fromCharCode(97 + i)}`);
  const params: SecAggParams = { runId: 'run-7', round: 4, neighbourCount: k, threshold: defaultThreshold(k), clipRange, vectorLength };
  const signKeys = new Map(ids.map((id) => [id, nacl.sign.keyPair()]));
  const sites = new Map(ids.map((id) => [id, new SecAggSiteRound({ siteId: id, signingSecretKey: signKeys.get(id)!.secretKey, params })]));
  const deltas = new Map(ids.map((id) => [id, Float32Array.from({ length: vectorLength }, () => (2 * rand() - 1) * spread)]));
  const samples = new Map(ids.map((id) => [id, 50 + Math.floor(rand() * 5000)]));

  const advertised: Record<string, AdvertisedKeys> = {};
  for (const id of ids) {
    advertised[id] = sites.get(id)!.advertise();
    verifyAdvertised(id, advertised[id], signKeys.get(id)!.publicKey, params.runId, params.round);
  }
  const neighbours = buildNeighbourhoods(ids, k, `${params.runId}:${params.round}`);
  expect(neighbourDegree(n, k)).toBeGreaterThanOrEqual(params.threshold);

  const inbox = new Map<string, Record<string, Uint8Array>>(ids.map((id) => [id, {}]));
  for (const id of ids) {
    const keys = Object.fromEntries(neighbours[id].map((j) => [j, { advertised: advertised[j], signPublicKey: signKeys.get(j)!.publicKey }]));
    const sealed = sites.get(id)!.shareKeys(keys);
    expect(Object.keys(sealed).sort()).toEqual(neighbours[id]);
    for (const [to, box] of Object.entries(sealed)) inbox.get(to)![id] = box;
  }
  for (const id of ids) sites.get(id)!.receiveShares(inbox.get(id)!);
  const scale = [...samples.values()].reduce((a, b) => a + b, 0);
  return { ids, params, sites, signKeys, advertised, neighbours, deltas, samples, scale };
}

const weightOf = (r: Round, id: string) => r.samples.get(id)! / r.scale;

/** Stage 3 for the survivors, through the wire encoding; also returns each masked input. */
function maskAll(r: Round, survivors: readonly string[]): { masked: MaskedSum; inputs: Map<string, Uint32Array> } {
  const masked = new MaskedSum(r.params.vectorLength);
  const inputs = new Map<string, Uint32Array>();
  for (const id of survivors) {
    const input = r.sites.get(id)!.maskInput(r.deltas.get(id)!, weightOf(r, id));
    inputs.set(id, input);
    masked.add(id, decodeMaskedInput(encodeMaskedInput(input), r.params.vectorLength, id));
  }
  return { masked, inputs };
}

/** Stage 4 requests: each survivor's neighbours in U3 and in U2 \ U3 (everyone completed stage 2 here). */
function revealAll(r: Round, survivors: readonly string[]): { revealed: Record<string, RevealedShares>; refused: string[] } {
  const alive = new Set(survivors);
  const revealed: Record<string, RevealedShares> = {};
  const refused: string[] = [];
  for (const id of survivors) {
    const request = { survivors: r.neighbours[id].filter((j) => alive.has(j)), dropped: r.neighbours[id].filter((j) => !alive.has(j)) };
    try {
      revealed[id] = r.sites.get(id)!.revealShares(request);
    } catch (e) {
      if (!(e instanceof SecAggError)) throw e;
      refused.push(id);
    }
  }
  return { revealed, refused };
}

/** Stages 3 and 4 up to the coordinator's unmask input, `dropped` never sending a masked input. */
function endRound(r: Round, dropped: readonly string[]) {
  const survivors = r.ids.filter((id) => !dropped.includes(id));
  const { masked, inputs } = maskAll(r, survivors);
  const { revealed, refused } = revealAll(r, survivors);
  const unmaskInput = { params: r.params, masked, neighbours: r.neighbours, advertised: r.advertised, survivors, dropped, revealed };
  const weightSum = survivors.reduce((sum, id) => sum + weightOf(r, id), 0);
  return { survivors, inputs, refused, unmaskInput, weightSum };
}

/** unmaskSum / the survivors' weight sum: the weighted average the coordinator ends with. */
const averageOf = (sum: Float64Array, weightSum: number) => sum.map((x) => x / weightSum);

/** FedAvg of the clipped deltas in float64: sum(n_i * clip(delta_i)) / sum(n_i). */
function reference(r: Round, survivors: readonly string[]): Float64Array {
  const c = r.params.clipRange;
  const out = new Float64Array(r.params.vectorLength);
  let total = 0;
  for (const id of survivors) {
    const n = r.samples.get(id)!;
    const d = r.deltas.get(id)!;
    for (let i = 0; i < out.length; i++) out[i] += n * min(c, max(-c, d[i]));
    total += n;
  }
  return out.map((x) => x / total);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = max(worst, abs(a[i] - b[i]));
  return worst;
}

/** The average's error bound: survivors * 2^-(f+1) (+ float64 slack) / the survivors' weight sum. */
const averageBound = (r: Round, survivors: readonly string[], weightSum: number) =>
  quantizationErrorBound(survivors.length, r.params.clipRange) / weightSum;

function correlation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i] / n;
    mb += b[i] / n;
  }
  let cov = 0;
  let va = 0;
  let vb = 0;
  for (let i = 0; i < n; i++) {
    cov += (a[i] - ma) * (b[i] - mb);
    va += (a[i] - ma) ** 2;
    vb += (b[i] - mb) ** 2;
  }
  return cov / Math.sqrt(va * vb);
}

const asSigned = (v: Uint32Array) => new Int32Array(v.buffer, v.byteOffset, v.length);

describe('SecAgg+ end to end: 7 sites, k = 4, t = 3', () => {
  const spec = { n: 7, k: 4, vectorLength: 10_007 };

  describe('every site survives; a third of the delta values lie beyond clipRange', () => {
    let r: Round;
    let end: ReturnType<typeof endRound>;
    let average: Float64Array;
    beforeAll(() => {
      r = startRound({ ...spec, clipRange: 1, spread: 1.5, seed: 1 });
      end = endRound(r, []);
      average = averageOf(unmaskSum(end.unmaskInput), end.weightSum);
    });

    it('unmasked sum / weight sum is the weighted average of the clipped deltas within the quantization bound', () => {
      expect(r.params.threshold).toBe(3);
      expect(end.refused).toEqual([]);
      const bound = averageBound(r, end.survivors, end.weightSum);
      // 7 sites, f = 30, weights summing to 1: 7 * 2^-31 ~ 3.3e-9.
      expect(end.weightSum).toBeCloseTo(1, 12);
      expect(bound).toBeLessThan(3.3e-9);
      expect(maxAbsDiff(average, reference(r, end.survivors))).toBeLessThanOrEqual(bound);
    });

    it('clips each coordinate to ±clipRange before weighting', () => {
      const outside = [...r.deltas.values()].reduce((n, d) => n + d.filter((x) => abs(x) > 1).length, 0);
      expect(outside).toBeGreaterThan(7 * 10_007 * 0.3);
      const unclipped = new Float64Array(10_007);
      for (const id of r.ids) r.deltas.get(id)!.forEach((x, i) => (unclipped[i] += weightOf(r, id) * x));
      expect(maxAbsDiff(average, unclipped)).toBeGreaterThan(0.1);
      expect(Math.max(...average.map(abs))).toBeLessThanOrEqual(1 + averageBound(r, end.survivors, end.weightSum));
    });

    it('a single masked input tells the coordinator nothing; neither does a partial or not yet unmasked sum', () => {
      const id = r.ids[2];
      const quantizedOf = (x: string) => asSigned(quantize(r.deltas.get(x)!, weightOf(r, x), r.params.clipRange));
      const masked = asSigned(end.inputs.get(id)!);
      const quantized = quantizedOf(id);
      expect(abs(correlation(masked, quantized))).toBeLessThan(0.05);
      expect(masked.filter((x, i) => x === quantized[i]).length).toBeLessThan(3);
      // Masked values spread over the whole ring, while the input stays within +-2^30.
      expect(Math.max(...masked)).toBeGreaterThan(2 ** 30);

      const partial = new MaskedSum(spec.vectorLength);
      const truePartial = new Float64Array(spec.vectorLength);
      for (const x of r.ids.slice(0, 5)) {
        partial.add(x, end.inputs.get(x)!);
        quantizedOf(x).forEach((q, i) => (truePartial[i] += q));
      }
      expect(abs(correlation(asSigned(partial.ringSum()), truePartial))).toBeLessThan(0.05);
      // With everyone in, the self masks still hide the sum until unmasking.
      for (const x of r.ids.slice(5)) quantizedOf(x).forEach((q, i) => (truePartial[i] += q));
      expect(abs(correlation(asSigned(end.unmaskInput.masked.ringSum()), truePartial))).toBeLessThan(0.05);
    });

    it('refuses a tampered or misattributed stage-1 signature, naming the neighbour', () => {
      const [victim, liar, other] = [r.ids[0], r.neighbours[r.ids[0]][0], r.neighbours[r.ids[0]][1]];
      const fresh = new SecAggSiteRound({ siteId: victim, signingSecretKey: r.signKeys.get(victim)!.secretKey, params: r.params });
      fresh.advertise();
      const keysFor = (patch: Partial<Record<string, AdvertisedKeys>>) =>
        Object.fromEntries(r.neighbours[victim].map((j) => [j, { advertised: patch[j] ?? r.advertised[j], signPublicKey: r.signKeys.get(j)!.publicKey }]));
      const tampered = { ...r.advertised[liar], sPublicKey: r.advertised[liar].sPublicKey.map((b, i) => (i === 0 ? b ^ 1 : b)) };
      expect(() => fresh.shareKeys(keysFor({ [liar]: tampered }))).toThrow(new RegExp(`site ${liar}: advertised keys have a bad signature`));
      // Another site's genuine keys presented under the liar's id.
      expect(() => fresh.shareKeys(keysFor({ [liar]: r.advertised[other] }))).toThrow(new RegExp(`site ${liar}: .*bad signature`));
      // The coordinator's own check, including a replay into another round.
      const liarKey = r.signKeys.get(liar)!.publicKey;
      expect(() => verifyAdvertised(liar, tampered, liarKey, 'run-7', 4)).toThrow(SecAggError);
      expect(() => verifyAdvertised(liar, r.advertised[liar], liarKey, 'run-7', 5)).toThrow(/bad signature .*round 5/);
      expect(() => verifyAdvertised(liar, r.advertised[liar], r.signKeys.get(other)!.publicKey, 'run-7', 4)).toThrow(/bad signature/);
      expect(() => verifyAdvertised(liar, r.advertised[liar], liarKey, 'run-7', 4)).not.toThrow();
      // The signature is plain Ed25519, as nacl.sign makes it.
      const signed = advertiseSignedBytes('run-7', 4, liar, r.advertised[liar].cPublicKey, r.advertised[liar].sPublicKey);
      expect(nacl.sign.detached.verify(signed, r.advertised[liar].signature, liarKey)).toBe(true);
      // A refusal leaves the site able to go on with the genuine keys.
      expect(Object.keys(fresh.shareKeys(keysFor({})))).toEqual(r.neighbours[victim]);
    });
  });

  describe('two neighbouring sites drop after stage 2', () => {
    let r: Round;
    let dropped: string[];
    let end: ReturnType<typeof endRound>;
    beforeAll(() => {
      r = startRound({ ...spec, seed: 2 });
      const a = r.ids[0];
      dropped = [a, r.neighbours[a][0]];
      end = endRound(r, dropped);
    });

    it('the result is the survivors’ weighted average within the bound', () => {
      // Each dropped site has exactly t = 3 surviving neighbours to rebuild its s key, and some
      // survivor next to both rebuilds its b from 2 neighbours and its own share.
      for (const d of dropped) expect(r.neighbours[d].filter((j) => !dropped.includes(j))).toHaveLength(3);
      expect(end.survivors.some((u) => dropped.every((d) => r.neighbours[u].includes(d)))).toBe(true);
      expect(end.refused).toEqual([]);
      const average = averageOf(unmaskSum(end.unmaskInput), end.weightSum);
      expect(end.survivors).toHaveLength(5);
      expect(end.weightSum).toBeLessThan(1);
      expect(maxAbsDiff(average, reference(r, end.survivors))).toBeLessThanOrEqual(averageBound(r, end.survivors, end.weightSum));
      // ... and not the average over everybody.
      expect(maxAbsDiff(average, reference(r, r.ids))).toBeGreaterThan(1e-3);
    });

    it('a wrong revealed share fails loudly instead of giving a wrong sum', () => {
      const { revealed } = end.unmaskInput;
      const unmask = (rev: Record<string, RevealedShares>) => unmaskSum({ ...end.unmaskInput, revealed: rev });
      const flip = (share: Uint8Array, at: number) => share.map((b, i) => (i === at ? b ^ 0x40 : b));
      const patched = (holder: string, kind: 'b' | 's', owner: string, at: number) => ({
        ...revealed,
        [holder]: { ...revealed[holder], [kind]: { ...revealed[holder][kind], [owner]: flip(revealed[holder][kind][owner], at) } },
      });
      // The s key of a dropped site, rebuilt from exactly t shares, is checked against its advertised public key.
      const a = dropped[0];
      const holderOfA = Object.keys(revealed).find((h) => revealed[h].s[a])!;
      expect(() => unmask(patched(holderOfA, 's', a, 5))).toThrow(new RegExp(`site ${a}: the rebuilt s key does not match its advertised public key`));
      // A survivor's b with more than t holders: the extra shares expose a wrong one.
      const owner = end.survivors.find((x) => r.neighbours[x].filter((j) => end.survivors.includes(j)).length + 1 > 3)!;
      const holderOfB = r.neighbours[owner].find((j) => end.survivors.includes(j))!;
      expect(() => unmask(patched(holderOfB, 'b', owner, 5))).toThrow(new RegExp(`site ${owner}: self-mask seed: the share with x = \\d disagrees`));
      // A share whose x is not the holder's.
      const x = [...r.neighbours[owner], owner].sort().indexOf(holderOfB) + 1;
      expect(() => unmask(patched(holderOfB, 'b', owner, 0))).toThrow(new RegExp(`site ${holderOfB}: its b share of ${owner} must be 33 bytes with x = ${x}`));
      // The genuine answers still unmask.
      expect(() => unmask(revealed)).not.toThrow();
    });

    it('unmaskSum refuses inconsistent coordinator bookkeeping', () => {
      const base = end.unmaskInput;
      const [s0, s1] = end.survivors;
      expect(() => unmaskSum({ ...base, survivors: end.survivors.slice(1), dropped: [...dropped, s0] })).toThrow(
        /survivors \[.*\] differ from the sites in the masked sum/,
      );
      expect(() => unmaskSum({ ...base, dropped: [...dropped, s1] })).toThrow(new RegExp(`site ${s1}: listed both as survivor and as dropped`));
      expect(() => unmaskSum({ ...base, revealed: { ...base.revealed, [dropped[0]]: { b: {}, s: {} } } })).toThrow(
        new RegExp(`site ${dropped[0]}: revealed shares but is not a survivor`),
      );
      const owner = Object.keys(base.revealed[s0].b).find((id) => id !== s0)!;
      const swapped = { ...base.revealed, [s0]: { b: {}, s: { ...base.revealed[s0].s, [owner]: base.revealed[s0].b[owner] } } };
      expect(() => unmaskSum({ ...base, revealed: swapped })).toThrow(new RegExp(`site ${s0}: revealed a s share of ${owner}, which is not dropped`));
      expect(() => unmaskSum({ ...base, params: { ...base.params, vectorLength: 5 } })).toThrow(/masked sum has length 10007, params.vectorLength is 5/);
      expect(() => base.masked.add(s0, new Uint32Array(10_007))).toThrow(/masked input already added/);
      expect(() => new MaskedSum(8).add('x', new Uint32Array(7))).toThrow(/site x: masked input has 7 values, expected 8/);
      expect(() => decodeMaskedInput(new Uint8Array(31), 8, 'x')).toThrow(/site x: masked input must be 32 bytes/);
    });
  });

  it('with too many drops, unmasking fails naming the site below the threshold', () => {
    const r = startRound({ ...spec, vectorLength: 64, seed: 3 });
    // A survivor keeps a single surviving neighbour: with its own share, 2 of the 3 needed.
    const lonely = r.ids[0];
    const dropped = r.neighbours[lonely].slice(0, 3);
    const { unmaskInput, refused } = endRound(r, dropped);
    expect(refused).toContain(lonely); // 1 surviving neighbour + itself < t: it refuses to reveal
    const holders = r.neighbours[lonely].filter((j) => unmaskInput.revealed[j]).length;
    expect(holders).toBeLessThanOrEqual(1);
    const unmask = () => unmaskSum(unmaskInput);
    expect(unmask).toThrow(SecAggError);
    expect(unmask).toThrow(new RegExp(`site ${lonely}: only ${holders} of 3 shares of its self-mask seed.*below the threshold 3`));
  });

  it('a site never reveals both the b and the s share of one neighbour, nor answers an unsafe request', () => {
    const r = startRound({ ...spec, vectorLength: 16, seed: 4 });
    maskAll(r, r.ids);
    const id = r.ids[0];
    const site = r.sites.get(id)!;
    const [n1, n2, n3, n4] = r.neighbours[id];
    const stranger = r.ids.find((x) => x !== id && !r.neighbours[id].includes(x))!;
    expect(() => site.revealShares({ survivors: [n1, n2], dropped: [n2] })).toThrow(new RegExp(`${n2} is listed both as survivor and as dropped`));
    expect(() => site.revealShares({ survivors: [n1, stranger], dropped: [] })).toThrow(new RegExp(`${stranger} is not its neighbour`));
    expect(() => site.revealShares({ survivors: [id, n1], dropped: [] })).toThrow(new RegExp(`${id} is not its neighbour`));
    expect(() => site.revealShares({ survivors: [n1], dropped: [n2, n3, n4] })).toThrow(/only 2 survivors including itself, below the threshold 3/);

    const first = site.revealShares({ survivors: [n1, n2], dropped: [n3] });
    expect(Object.keys(first.b).sort()).toEqual([id, n1, n2].sort()); // its own share of its own b too
    expect(Object.keys(first.s)).toEqual([n3]);
    expect(first.b[n1]).toHaveLength(33);
    const repeat = site.revealShares({ survivors: [n1, n2], dropped: [n3] });
    expect(Buffer.from(repeat.b[n1]).equals(Buffer.from(first.b[n1]))).toBe(true);
    expect(() => site.revealShares({ survivors: [n4, n3], dropped: [] })).toThrow(new RegExp(`already revealed the s share of ${n3}; refuses its b share`));
    expect(() => site.revealShares({ survivors: [n2, n4], dropped: [n1] })).toThrow(new RegExp(`already revealed the b share of ${n1}; refuses its s share`));
    // Refused requests record nothing: n4 was a "survivor" in both, yet its s share can still be given.
    expect(site.revealShares({ survivors: [n1, n2], dropped: [n4] }).s[n4]).toHaveLength(33);
    expect(() => site.revealShares({ survivors: [n1, n4], dropped: [] })).toThrow(new RegExp(`already revealed the s share of ${n4}`));
  });

  it('refuses shares sealed for another site, or bound to another site, run or round, naming the sender', () => {
    const params: SecAggParams = { runId: 'run-7', round: 4, neighbourCount: 2, threshold: 2, clipRange: 1, vectorLength: 4 };
    const victimSign = nacl.sign.keyPair();
    const victim = new SecAggSiteRound({ siteId: 'victim', signingSecretKey: victimSign.secretKey, params });
    const victimKeys = victim.advertise();
    // Two neighbours whose keys the test holds, to forge what a misbehaving site could send.
    const peers = ['m1', 'm2'].map((id) => {
      const sign = nacl.sign.keyPair();
      const c = nacl.box.keyPair();
      const s = nacl.box.keyPair();
      const signature = nacl.sign.detached(advertiseSignedBytes('run-7', 4, id, c.publicKey, s.publicKey), sign.secretKey);
      return { id, c, keys: { advertised: { cPublicKey: c.publicKey, sPublicKey: s.publicKey, signature }, signPublicKey: sign.publicKey } };
    });
    const outgoing = victim.shareKeys(Object.fromEntries(peers.map((p) => [p.id, p.keys])));
    const [bShare] = split(nacl.randomBytes(32), 2, 2);
    const [sShare] = split(nacl.randomBytes(32), 2, 2);
    const share = (from: (typeof peers)[number], patch: object = {}, recipient = victimKeys.cPublicKey) =>
      sealShare({ from: from.id, to: 'victim', runId: 'run-7', round: 4, bShare, sShare, ...patch }, nacl.box.before(recipient, from.c.secretKey));
    const good = share(peers[1]);
    const cases: [Uint8Array, RegExp][] = [
      [share(peers[0], { round: 5 }), /share from site m1: round is 5, expected 4/],
      [share(peers[0], { runId: 'run-8' }), /share from site m1: runId is "run-8", expected "run-7"/],
      [share(peers[0], { to: 'someone' }), /share from site m1: to is "someone", expected "victim"/],
      [share(peers[0], { from: 'm2' }), /share from site m1: from is "m2", expected "m1"/],
      [share(peers[0], {}, peers[1].c.publicKey), /share from site m1: cannot be opened/],
      [share(peers[0], { sShare: sShare.slice(0, 20) }), /share from site m1: shares must be two 33-byte shares/],
      // The victim's own share to m1, reflected back as if m1 had sent it (same pair key both ways).
      [outgoing.m1, /share from site m1: from is "victim", expected "m1"/],
    ];
    for (const [bad, message] of cases) expect(() => victim.receiveShares({ m1: bad, m2: good })).toThrow(message);
    expect(() => victim.receiveShares({ m1: share(peers[0]), m2: good, stranger: good })).toThrow(/got shares from stranger, which is not its neighbour/);
    expect(() => victim.receiveShares({})).toThrow(/shares arrived from only 0 neighbours, so with its own share it is below the threshold 2/);
    // Nothing was kept from the refused calls: the genuine shares still go through.
    expect(() => victim.receiveShares({ m1: share(peers[0]), m2: good })).not.toThrow();
  });
});

describe('SecAgg+ end to end, large vector', () => {
  it('L = 1,000,003, 10 sites, k = 6, t = 4, one drop: exact within the bound', () => {
    const r = startRound({ n: 10, k: 6, vectorLength: 1_000_003, clipRange: 2, seed: 9 });
    expect(r.params.threshold).toBe(4);
    const end = endRound(r, [r.ids[3]]);
    const average = averageOf(unmaskSum(end.unmaskInput), end.weightSum);
    expect(maxAbsDiff(average, reference(r, end.survivors))).toBeLessThanOrEqual(averageBound(r, end.survivors, end.weightSum));
  }, 120_000);
});
