import * as path from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { DataError } from '../data-error';
import { REAL_SAMPLE_ROOT } from '../test-paths';
import {
  combineMacenkoTargets,
  composeStains,
  DEFAULT_MACENKO_TARGET,
  fitMacenko,
  fitMacenkoMany,
  normalizeMacenko,
  opticalDensity,
  stainConcentrations,
  tryFitMacenko,
  type MacenkoTarget,
} from './macenko';
import { angleDegrees, percentile, unit3 } from './pixels';
import { correlation, decodeTile, grey, KNOWN_STAINS, meanAbsDiff, REAL_TILES, syntheticHeTile } from './stain-test-images';

const inUnitRange = (px: Float32Array): boolean => Math.min(...px) >= 0 && Math.max(...px) <= 1;

describe('Macenko stain normalization', () => {
  let real: Float32Array[];
  beforeAll(async () => {
    real = await Promise.all(REAL_TILES.map((t) => decodeTile(path.join(REAL_SAMPLE_ROOT, t), 64)));
  });

  it('optical density: white is 0, darker is larger', () => {
    const od = opticalDensity(Float32Array.from([1, 1, 1, 0, 0.5, 1]));
    expect(Array.from(od.subarray(0, 3))).toEqual([0, 0, 0]);
    expect(od[3]).toBeCloseTo(Math.log(256), 10);
    expect(od[4]).toBeGreaterThan(0);
    expect(od[5]).toBe(0);
  });

  it('concentrations invert composition', () => {
    const c = Float64Array.from([0.5, 1.2, 1.5, 0.1, 0, 0]);
    const back = stainConcentrations(opticalDensity(composeStains(KNOWN_STAINS, c)), KNOWN_STAINS);
    for (let i = 0; i < c.length; i++) expect(back[i]).toBeCloseTo(c[i], 5);
  });

  it('recovers the H and E vectors a synthetic image was composed from', () => {
    for (const seed of [1, 2, 3]) {
      const fit = fitMacenko(syntheticHeTile(96, seed));
      expect(angleDegrees(fit.stainMatrix[0], KNOWN_STAINS[0])).toBeLessThan(2);
      expect(angleDegrees(fit.stainMatrix[1], KNOWN_STAINS[1])).toBeLessThan(2);
      // The nuclei have H concentrations up to 1.6 and the stroma E up to 1.5.
      expect(fit.maxConcentrations[0]).toBeGreaterThan(1.2);
      expect(fit.maxConcentrations[0]).toBeLessThan(1.7);
      expect(fit.maxConcentrations[1]).toBeGreaterThan(1.1);
      expect(fit.maxConcentrations[1]).toBeLessThan(1.6);
    }
    // Other stains, H first by its larger red OD component.
    const stains: [[number, number, number], [number, number, number]] = [unit3([0.55, 0.75, 0.37]), unit3([0.12, 0.85, 0.51])];
    const fit = fitMacenko(syntheticHeTile(96, 4, stains));
    expect(angleDegrees(fit.stainMatrix[0], stains[0])).toBeLessThan(2);
    expect(angleDegrees(fit.stainMatrix[1], stains[1])).toBeLessThan(2);
  });

  it('normalizing to its own fit is ~identity; output always in [0, 1]', () => {
    const tile = syntheticHeTile(64, 5);
    expect(meanAbsDiff(normalizeMacenko(tile, fitMacenko(tile)), tile)).toBeLessThan(0.01);
    for (const img of real) {
      const out = normalizeMacenko(img, fitMacenko(img));
      expect(inUnitRange(out)).toBe(true);
      // Only what lies outside the two-stain plane is lost.
      expect(meanAbsDiff(out, img)).toBeLessThan(0.05);
    }
  });

  it('re-stains an image with the target stains: known stains in, known stains out', () => {
    // Same concentrations composed with two different stain pairs: normalizing one to the other's
    // fit must give the other.
    const other: [[number, number, number], [number, number, number]] = [unit3([0.55, 0.75, 0.37]), unit3([0.12, 0.85, 0.51])];
    const a = syntheticHeTile(64, 6);
    const b = syntheticHeTile(64, 6, other);
    const out = normalizeMacenko(a, fitMacenko(b));
    expect(inUnitRange(out)).toBe(true);
    expect(meanAbsDiff(out, b)).toBeLessThan(0.01);
    expect(meanAbsDiff(a, b)).toBeGreaterThan(0.03);
  });

  it('real images move towards the target colour and keep their structure', () => {
    const target = fitMacenko(real[1]);
    const meanRgb = (px: Float32Array): number[] =>
      [0, 1, 2].map((c) => px.filter((_, i) => i % 3 === c).reduce((acc, v) => acc + v, 0) / (px.length / 3));
    const distance = (p: number[], q: number[]): number => Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]);
    const goal = meanRgb(real[1]);
    let before = 0;
    let after = 0;
    for (const img of [real[0], real[2], real[3]]) {
      const out = normalizeMacenko(img, target);
      expect(inUnitRange(out)).toBe(true);
      // Stain strengths change (this tile's hematoxylin drops to a third), the layout does not.
      expect(correlation(grey(out), grey(img))).toBeGreaterThan(0.8);
      before += distance(meanRgb(img), goal);
      after += distance(meanRgb(out), goal);
      // Against the target stains, the normalized image has the target's maximum concentrations.
      const conc = stainConcentrations(opticalDensity(out), target.stainMatrix);
      for (const k of [0, 1]) {
        const ck = Float64Array.from({ length: conc.length / 2 }, (_, p) => conc[2 * p + k]);
        expect(percentile(ck, 99) / target.maxConcentrations[k]).toBeCloseTo(1, 1);
      }
    }
    expect(after).toBeLessThan(before);
    // The real images look like H&E: hematoxylin absorbs more red than eosin.
    for (const img of real) {
      const fit = fitMacenko(img);
      expect(fit.stainMatrix[0][0]).toBeGreaterThan(fit.stainMatrix[1][0]);
    }
  });

  it('targets are small JSON objects; fits combine over images and sites by median', () => {
    const fits = real.map((img) => fitMacenko(img));
    const json = JSON.parse(JSON.stringify(fits[0])) as MacenkoTarget;
    expect(json).toEqual(fits[0]);
    const combined = fitMacenkoMany(real);
    expect(combined).toEqual(combineMacenkoTargets(fits));
    for (const k of [0, 1] as const) {
      expect(Math.hypot(...combined.stainMatrix[k])).toBeCloseTo(1, 10);
      for (const f of fits) expect(angleDegrees(combined.stainMatrix[k], f.stainMatrix[k])).toBeLessThan(30);
    }
    const single = combineMacenkoTargets([fits[2]]);
    for (const k of [0, 1] as const) {
      for (let c = 0; c < 3; c++) expect(single.stainMatrix[k][c]).toBeCloseTo(fits[2].stainMatrix[k][c], 12);
      expect(single.maxConcentrations[k]).toBe(fits[2].maxConcentrations[k]);
    }
    expect(inUnitRange(normalizeMacenko(real[0], DEFAULT_MACENKO_TARGET))).toBe(true);
  });

  it('background-only images: fit fails clearly, normalization leaves them unchanged', () => {
    const white = new Float32Array(300).fill(0.98);
    expect(tryFitMacenko(white)).toBeNull();
    expect(() => fitMacenko(white)).toThrow(DataError);
    expect(Array.from(normalizeMacenko(white, DEFAULT_MACENKO_TARGET))).toEqual(Array.from(white));
    expect(() => fitMacenkoMany([white])).toThrow(DataError);
    expect(() => normalizeMacenko(white, { ...DEFAULT_MACENKO_TARGET, maxConcentrations: [0, 1] })).toThrow(ValidationError);
  });
});
