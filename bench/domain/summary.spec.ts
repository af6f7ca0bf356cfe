import {
  bestByValidation,
  checkPersonalization,
  checkStainTarget,
  chooseCombination,
  recoveredGapFraction,
  singleMethodConfig,
  worstSiteGap,
} from './summary';

const p = { mu: 0.01, lambda: 1 };

describe('bench:domain summary arithmetic', () => {
  it('recovers the gap as a fraction, null without a gap above 1 point', () => {
    expect(recoveredGapFraction(0.7, 0.6, 0.8)).toBeCloseTo(0.5, 12);
    expect(recoveredGapFraction(0.85, 0.6, 0.8)).toBeCloseTo(1.25, 12);
    expect(recoveredGapFraction(0.55, 0.6, 0.8)).toBeCloseTo(-0.25, 12);
    expect(recoveredGapFraction(0.7, 0.6, 0.605)).toBeNull();
    expect(recoveredGapFraction(0.7, 0.6, 0.5)).toBeNull();
  });

  it('takes the worst site with a figure', () => {
    expect(worstSiteGap(0.7, [0.72, null, 0.61, 0.65])).toEqual({ gap: expect.closeTo(0.09, 12), site: 2 });
    expect(worstSiteGap(0.7, [null, null])).toBeNull();
    expect(worstSiteGap(0.6, [0.8])).toEqual({ gap: expect.closeTo(-0.2, 12), site: 0 });
  });

  it('combines every change that beat FedAvg on validation, the better of each pair', () => {
    const c = chooseCombination({ fedavg: 0.6, fedprox: 0.59, fedbn: 0.65, coral: 0.62, mmd: 0.63, stainTarget: 0.7, stainAug: 0.61 }, p);
    expect(c.components).toEqual(['fedbn', 'mmd', 'stainTarget']);
    expect(c.config).toEqual({ proximalMu: 0, fedbn: true, alignment: { method: 'mmd', lambda: 1 }, stain: 'target' });
    expect(c.sameAs).toBeNull();
  });

  it('is a single method (not trained again) when at most one change helps', () => {
    expect(chooseCombination({ fedavg: 0.6, fedprox: 0.61, fedbn: 0.5 }, p)).toMatchObject({ components: ['fedprox'], sameAs: 'fedprox' });
    expect(chooseCombination({ fedavg: 0.6, fedbn: 0.5, stainAug: 0.6 }, p)).toMatchObject({ components: [], sameAs: 'fedavg', config: singleMethodConfig('fedavg', p) });
    expect(() => chooseCombination({ fedbn: 0.5 }, p)).toThrow(/FedAvg/);
  });

  it('picks the best method by validation score only (highest; ties: the earlier method)', () => {
    expect(bestByValidation({ fedavg: 0.6, fedbn: 0.7, combined: 0.7 })).toBe('fedbn');
    expect(bestByValidation({ fedavg: 0.6, mmd: Number.NaN })).toBe('fedavg');
  });

  it('checks the stain-shift target on both conditions', () => {
    expect(checkStainTarget(0.85, 0.03).met).toBe(true);
    expect(checkStainTarget(0.85, 0.06).met).toBe(false);
    expect(checkStainTarget(0.5, 0.01).met).toBe(false);
    expect(checkStainTarget(null, 0.01).met).toBeNull();
    expect(checkStainTarget(null, 0.2).met).toBe(false);
  });

  it('checks personalization against local-only strictly, per site', () => {
    expect(checkPersonalization([
      { site: 1, personalized: 0.7, localOnly: 0.6 },
      { site: 2, personalized: 0.8, localOnly: 0.8 },
      { site: 3, personalized: null, localOnly: 0.5 },
    ])).toEqual({ met: false, beaten: 1, tied: 1, compared: 2 });
    expect(checkPersonalization([{ site: 1, personalized: 0.7, localOnly: 0.6 }]).met).toBe(true);
    expect(checkPersonalization([]).met).toBeNull();
  });
});
