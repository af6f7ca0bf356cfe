import nacl from 'tweetnacl';
import { AdvertisedKeys } from './advertise';
import { SecAggError } from './errors';
import { advertiseSignedBytes } from './messages';
import { SecAggParams } from './params';
import { SecAggSiteRound } from './site-round';

const params: SecAggParams = { runId: 'run-1', round: 2, neighbourCount: 2, threshold: 2, clipRange: 1, vectorLength: 3 };

/** Three sites, each the neighbour of the other two (k = 2, t = 2). */
function trio() {
  const ids = ['a', 'b', 'c'];
  const signKeys = new Map(ids.map((id) => [id, nacl.sign.keyPair()]));
  const sites = new Map(ids.map((id) => [id, new SecAggSiteRound({ siteId: id, signingSecretKey: signKeys.get(id)!.secretKey, params })]));
  const advertised = new Map<string, AdvertisedKeys>(ids.map((id) => [id, sites.get(id)!.advertise()]));
  const keysFor = (id: string) =>
    Object.fromEntries(ids.filter((j) => j !== id).map((j) => [j, { advertised: advertised.get(j)!, signPublicKey: signKeys.get(j)!.publicKey }]));
  return { ids, sites, keysFor };
}

describe('SecAggSiteRound', () => {
  it('refuses bad construction arguments', () => {
    const key = nacl.sign.keyPair().secretKey;
    expect(() => new SecAggSiteRound({ siteId: 'Bad Id', signingSecretKey: key, params })).toThrow(/site id "Bad Id" must be/);
    expect(() => new SecAggSiteRound({ siteId: 'a', signingSecretKey: key.subarray(0, 32), params })).toThrow(/site a: signing secret key must be 64 bytes/);
    expect(() => new SecAggSiteRound({ siteId: 'a', signingSecretKey: key, params: { ...params, threshold: 1 } })).toThrow(/params.threshold/);
  });

  it('enforces the stage order, naming the step that is due', () => {
    const { sites, keysFor } = trio();
    const a = sites.get('a')!;
    expect(() => a.advertise()).toThrow(/site a: advertise called out of order \(the next step is shareKeys\)/);
    expect(() => a.receiveShares({})).toThrow(/site a: receiveShares called out of order \(the next step is shareKeys\)/);
    expect(() => a.maskInput(new Float32Array(3), 0.5)).toThrow(/maskInput called out of order/);
    expect(() => a.revealShares({ survivors: [], dropped: [] })).toThrow(/revealShares called out of order/);
    a.shareKeys(keysFor('a'));
    expect(() => a.shareKeys(keysFor('a'))).toThrow(/site a: shareKeys called out of order \(the next step is receiveShares\)/);
    const fresh = new SecAggSiteRound({ siteId: 'z', signingSecretKey: nacl.sign.keyPair().secretKey, params });
    expect(() => fresh.shareKeys({})).toThrow(SecAggError);
    expect(() => fresh.shareKeys({})).toThrow(/site z: shareKeys called out of order \(the next step is advertise\)/);
  });

  it('runs a full round, refusing bad stage inputs without losing its place', () => {
    const { ids, sites, keysFor } = trio();
    const a = sites.get('a')!;
    const kA = keysFor('a');
    expect(() => a.shareKeys({ b: kA.b })).toThrow(/site a: got 1 neighbours, needs between the threshold 2 and neighbourCount 2/);
    expect(() => a.shareKeys({ ...kA, d: kA.b })).toThrow(/got 3 neighbours/);
    expect(() => a.shareKeys({ a: kA.b, b: kA.b })).toThrow(/site a: listed as its own neighbour/);
    const outbox = new Map(ids.map((id) => [id, sites.get(id)!.shareKeys(keysFor(id))]));
    for (const [from, sealed] of outbox) expect(Object.keys(sealed).sort()).toEqual(ids.filter((j) => j !== from));
    const inbox = (to: string) => Object.fromEntries(ids.filter((j) => j !== to).map((j) => [j, outbox.get(j)![to]]));
    for (const id of ids) sites.get(id)!.receiveShares(inbox(id));

    expect(() => a.maskInput(new Float32Array(4), 0.5)).toThrow(/site a: delta has 4 values, params.vectorLength is 3/);
    expect(() => a.maskInput(Float32Array.from([0, NaN, 0]), 0.5)).toThrow(/site a: delta\[1\] is NaN/);
    expect(() => a.maskInput(new Float32Array(3), 1.5)).toThrow(/site a: weight must be in \(0, 1\], got 1.5/);
    const masked = a.maskInput(Float32Array.from([0.5, -0.25, 0]), 0.5);
    expect(masked).toHaveLength(3);
    expect(() => a.maskInput(new Float32Array(3), 0.5)).toThrow(/maskInput called out of order \(the next step is revealShares\)/);
    const revealed = a.revealShares({ survivors: ['b', 'c'], dropped: [] });
    expect(Object.keys(revealed.b).sort()).toEqual(['a', 'b', 'c']);
    expect(revealed.s).toEqual({});
  });

  it('refuses a neighbour whose signed c or s key has low order (the box key or pair mask would be public)', () => {
    const { sites, keysFor } = trio();
    const kA = keysFor('a');
    const liar = nacl.sign.keyPair();
    const lowOrder = new Uint8Array(32);
    const signed = (cPublicKey: Uint8Array, sPublicKey: Uint8Array) => ({
      advertised: { cPublicKey, sPublicKey, signature: nacl.sign.detached(advertiseSignedBytes(params.runId, params.round, 'b', cPublicKey, sPublicKey), liar.secretKey) },
      signPublicKey: liar.publicKey,
    });
    const fine = nacl.box.keyPair().publicKey;
    expect(() => sites.get('a')!.shareKeys({ ...kA, b: signed(lowOrder, fine) })).toThrow(/sites a and b: the c public key of b is degenerate/);
    expect(() => sites.get('a')!.shareKeys({ ...kA, b: signed(fine, lowOrder) })).toThrow(/sites a and b: an s public key is degenerate/);
    // Nothing was kept: the honest keys still work.
    expect(Object.keys(sites.get('a')!.shareKeys(kA)).sort()).toEqual(['b', 'c']);
  });
});
