import * as path from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { REAL_SAMPLE_ROOT } from '../test-paths';
import { combineReinhardStats, fitReinhard, fitReinhardMany, labToRgb, normalizeReinhard, rgbToLab, type ReinhardStats } from './reinhard';
import { correlation, decodeTile, grey, meanAbsDiff, REAL_TILES, syntheticHeTile } from './stain-test-images';

describe('Reinhard colour transfer (CIE Lab)', () => {
  let real: Float32Array[];
  beforeAll(async () => {
    real = await Promise.all(REAL_TILES.map((t) => decodeTile(path.join(REAL_SAMPLE_ROOT, t), 64)));
  });

  it('RGB -> Lab -> RGB round-trips; known Lab values of white, black and sRGB red', () => {
    const px = Float32Array.from([1, 1, 1, 0, 0, 0, 1, 0, 0, 0.3, 0.6, 0.2]);
    const lab = rgbToLab(px);
    expect(lab[0]).toBeCloseTo(100, 3);
    expect(Math.abs(lab[1]) + Math.abs(lab[2])).toBeLessThan(0.01);
    expect(lab[3]).toBeCloseTo(0, 6);
    expect(lab[6]).toBeCloseTo(53.24, 1);
    expect(lab[7]).toBeCloseTo(80.09, 1);
    expect(lab[8]).toBeCloseTo(67.2, 1);
    expect(meanAbsDiff(labToRgb(lab), px)).toBeLessThan(1e-5);
    expect(meanAbsDiff(labToRgb(rgbToLab(real[0])), real[0])).toBeLessThan(1e-5);
  });

  it("maps an image's Lab mean and std to the target's", () => {
    const target = fitReinhard(real[1]);
    for (const source of [real[0], real[2], real[3], syntheticHeTile(64, 3)]) {
      const out = normalizeReinhard(source, target);
      const got = fitReinhard(out);
      // Exact up to colours clamped at the sRGB gamut, which the dark, saturated synthetic tile has
      // many of (its a* and b* spread then fall short of the target's).
      const tol = source.length === real[1].length && source !== real[1] && real.includes(source) ? 0.1 : 4;
      for (let c = 0; c < 3; c++) {
        expect(Math.abs(got.mean[c] - target.mean[c])).toBeLessThan(tol);
        expect(Math.abs(got.std[c] - target.std[c])).toBeLessThan(tol);
      }
      expect(Math.min(...out)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...out)).toBeLessThanOrEqual(1);
      // Structure is kept: luminance stays highly correlated.
      expect(correlation(grey(out), grey(source))).toBeGreaterThan(0.9);
    }
  });

  it('is the identity when source and target statistics are the same', () => {
    for (const img of real) {
      const stats = fitReinhard(img);
      expect(meanAbsDiff(normalizeReinhard(img, stats), img)).toBeLessThan(1e-5);
      expect(meanAbsDiff(normalizeReinhard(img, stats, stats), img)).toBeLessThan(1e-5);
    }
  });

  it('statistics are small JSON objects that combine over images and sites', () => {
    const stats = real.map((img) => fitReinhard(img));
    const json = JSON.parse(JSON.stringify(stats[0])) as ReinhardStats;
    expect(json).toEqual(stats[0]);
    expect(Object.keys(json).sort()).toEqual(['mean', 'method', 'pixels', 'space', 'std']);
    const mean = fitReinhardMany(real);
    for (let c = 0; c < 3; c++) {
      expect(mean.mean[c]).toBeCloseTo(stats.reduce((a, s) => a + s.mean[c], 0) / stats.length, 8);
      expect(mean.std[c]).toBeCloseTo(stats.reduce((a, s) => a + s.std[c], 0) / stats.length, 8);
    }
    // Pooled statistics equal the statistics of all pixels together.
    const all = new Float32Array(real.reduce((a, r) => a + r.length, 0));
    let off = 0;
    for (const r of real) {
      all.set(r, off);
      off += r.length;
    }
    const pooled = combineReinhardStats(stats, { method: 'pooled' });
    const direct = fitReinhard(all);
    for (let c = 0; c < 3; c++) {
      expect(pooled.mean[c]).toBeCloseTo(direct.mean[c], 6);
      expect(pooled.std[c]).toBeCloseTo(direct.std[c], 6);
    }
    expect(pooled.pixels).toBe(direct.pixels);
    // Two sites: combining site-level statistics equals combining all images' statistics.
    const bySite = combineReinhardStats([combineReinhardStats(stats.slice(0, 2)), combineReinhardStats(stats.slice(2))]);
    for (let c = 0; c < 3; c++) expect(bySite.mean[c]).toBeCloseTo(mean.mean[c], 8);
  });

  it('rejects malformed statistics and pixels', () => {
    const good = fitReinhard(real[0]);
    expect(() => normalizeReinhard(real[0], { ...good, std: [1, 2] as unknown as [number, number, number] })).toThrow(ValidationError);
    expect(() => normalizeReinhard(real[0], { ...good, method: 'macenko' } as unknown as ReinhardStats)).toThrow(ValidationError);
    expect(() => fitReinhard(new Float32Array(4))).toThrow(ValidationError);
    expect(() => combineReinhardStats([])).toThrow(ValidationError);
  });
});
