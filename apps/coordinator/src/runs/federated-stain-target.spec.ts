import { generateSigningKeyPair, sign, toBase64 } from '@histofed/crypto';
import { StainStatistics, refusal, stainStatsSignedBytes } from '@histofed/protocol';
import { JsonLogger } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import type { SiteSessionsService } from '../federation/site-sessions.service';
import { FederatedStainTarget } from './federated-stain-target';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const unit = (v: number[]) => {
  const n = Math.hypot(...v);
  return v.map((x) => x / n) as [number, number, number];
};
const macenko = (h: number[], e: number[], max: [number, number]): StainStatistics => ({ method: 'macenko', stainMatrix: [unit(h), unit(e)], maxConcentrations: max });

/** Sites answering with `answers` (a function of the request), signed with their enrolled keys unless told otherwise. */
function setUp(answers: Record<string, (keys: ReturnType<typeof generateSigningKeyPair>) => unknown>) {
  const keys = Object.fromEntries(Object.keys(answers).map((id) => [id, generateSigningKeyPair()]));
  const sessions = {
    send: async (siteId: string) => answers[siteId](keys[siteId]),
  } as unknown as SiteSessionsService;
  const store = {
    getSite: async (siteId: string) => (keys[siteId] ? { siteId, signPublicKey: toBase64(keys[siteId].publicKey) } : null),
  } as unknown as CoordinatorStore;
  return new FederatedStainTarget(sessions, store, new JsonLogger('test', 'error'));
}
const signed = (siteId: string, stats: StainStatistics, images = 10) => (k: ReturnType<typeof generateSigningKeyPair>) => ({
  ok: true,
  siteId,
  images,
  stats,
  signature: toBase64(sign(stainStatsSignedBytes(RUN, siteId, images, stats), k.secretKey)),
});

describe('FederatedStainTarget', () => {
  it("combines the sites' Macenko fits (component-wise medians), leaving out every site whose answer cannot be used, with the reason", async () => {
    const a = macenko([0.6, 0.7, 0.4], [0.2, 0.8, 0.55], [1.9, 1.0]);
    const b = macenko([0.55, 0.72, 0.41], [0.22, 0.8, 0.56], [2.1, 1.2]);
    const c = macenko([0.5, 0.75, 0.42], [0.21, 0.79, 0.57], [2.0, 1.1]);
    const fitter = setUp({
      a: signed('a', a),
      b: signed('b', b),
      c: signed('c', c),
      forger: (k) => ({ ...signed('forger', a)(k), signature: toBase64(sign(new Uint8Array([1, 2, 3]), k.secretKey)) }),
      negative: signed('negative', macenko([0.6, 0.7, 0.4], [0.2, 0.8, 0.55], [-1, 1])),
      impostor: signed('a', a),
      silent: async () => refusal('site silent did not acknowledge coordinator:stain-stats: operation has timed out', 'no-answer'),
      wrongMethod: signed('wrongMethod', { method: 'reinhard', space: 'cie-lab', mean: [70, 10, -10], std: [10, 5, 5], pixels: 100 }),
    });
    const out = await fitter.fit(RUN, 'macenko', ['a', 'b', 'c', 'forger', 'negative', 'impostor', 'silent', 'wrongMethod']);
    expect(out.used).toEqual([
      { siteId: 'a', images: 10 },
      { siteId: 'b', images: 10 },
      { siteId: 'c', images: 10 },
    ]);
    expect(out.refused).toEqual({
      forger: 'the signature does not verify with the enrolled signing key',
      negative: expect.stringMatching(/stain statistics of site negative.*maxConcentrations/),
      impostor: 'answered as site a',
      silent: expect.stringMatching(/did not acknowledge/),
      wrongMethod: 'sent reinhard statistics, macenko were asked for',
    });
    const t = out.target as unknown as { stainMatrix: number[][]; maxConcentrations: number[] };
    expect(t.maxConcentrations).toEqual([2.0, 1.1]); // medians
    // Each component is the median of the three fits' components, then the vector is made unit.
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[1];
    const h = unit([0, 1, 2].map((i) => median([a, b, c].map((s) => (s as { stainMatrix: number[][] }).stainMatrix[0][i]))));
    t.stainMatrix[0].forEach((v, i) => expect(v).toBeCloseTo(h[i], 12));
  });

  it('returns no target when no site answered usefully', async () => {
    const fitter = setUp({ a: async () => refusal('busy', 'busy') });
    expect(await fitter.fit(RUN, 'reinhard', ['a'])).toEqual({ target: null, used: [], refused: { a: 'busy' } });
  });

  it("combines Reinhard moments weighted by the sites' pixel counts", async () => {
    const fitter = setUp({
      a: signed('a', { method: 'reinhard', space: 'cie-lab', mean: [60, 10, -10], std: [10, 4, 4], pixels: 100 }),
      b: signed('b', { method: 'reinhard', space: 'cie-lab', mean: [80, 20, -20], std: [20, 8, 8], pixels: 300 }),
    });
    const out = await fitter.fit(RUN, 'reinhard', ['a', 'b']);
    expect(out.target).toMatchObject({ method: 'reinhard', mean: [75, 17.5, -17.5], std: [17.5, 7, 7], pixels: 400 });
  });
});
