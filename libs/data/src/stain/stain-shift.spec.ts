import * as path from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { REAL_SAMPLE_ROOT } from '../test-paths';
import { DEFAULT_MACENKO_TARGET, fitMacenko, opticalDensity } from './macenko';
import { createStainNormalizer, createStainShifter, transformBatch, validateStainTarget } from './normalizer';
import { angleDegrees } from './pixels';
import { fitReinhard } from './reinhard';
import { applyStainShift, siteStainShift, stainShiftMatrix, type StainShift } from './stain-shift';
import { correlation, decodeTile, grey, meanAbsDiff, REAL_TILES, syntheticHeTile } from './stain-test-images';

describe('per-site stain shift', () => {
  let real: Float32Array[];
  beforeAll(async () => {
    real = await Promise.all(REAL_TILES.map((t) => decodeTile(path.join(REAL_SAMPLE_ROOT, t), 48)));
  });

  it('is deterministic from (site, seed), differs between sites and seeds, and is plausible', () => {
    expect(siteStainShift(2, 7)).toEqual(siteStainShift(2, 7));
    const shifts = [0, 1, 2, 3, 4, 5].map((i) => siteStainShift(i, 7));
    expect(new Set(shifts.map((s) => JSON.stringify(s.stainMatrix))).size).toBe(6);
    expect(JSON.stringify(siteStainShift(2, 8))).not.toBe(JSON.stringify(siteStainShift(2, 7)));
    for (const s of [...shifts, ...[0, 1, 2].map((i) => siteStainShift(i, 99))]) {
      expect(JSON.parse(JSON.stringify(s))).toEqual(s);
      for (const k of [0, 1]) {
        expect(s.rotationDegrees[k]).toBeGreaterThan(1);
        expect(s.rotationDegrees[k]).toBeLessThan(9);
        expect(s.rotationDegrees[k]).toBeCloseTo(angleDegrees(s.reference[k], s.stainMatrix[k]), 10);
        expect(Math.abs(s.concentrationScale[k] - 1)).toBeGreaterThanOrEqual(0.1);
        expect(Math.abs(s.concentrationScale[k] - 1)).toBeLessThanOrEqual(0.2);
        expect(Math.min(...s.stainMatrix[k])).toBeGreaterThan(0);
      }
      // Still hematoxylin first.
      expect(s.stainMatrix[0][0]).toBeGreaterThan(s.stainMatrix[1][0]);
    }
  });

  it('changes colour, keeps structure, keeps white white, stays in [0, 1]', () => {
    const shift = siteStainShift(1, 3);
    for (const img of [...real, syntheticHeTile(48, 1)]) {
      const out = applyStainShift(img, shift);
      expect(Math.min(...out)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...out)).toBeLessThanOrEqual(1);
      expect(meanAbsDiff(out, img)).toBeGreaterThan(0.005);
      expect(correlation(grey(out), grey(img))).toBeGreaterThan(0.97);
      const [before, after] = [fitReinhard(img), fitReinhard(out)];
      expect(Math.hypot(before.mean[0] - after.mean[0], before.mean[1] - after.mean[1], before.mean[2] - after.mean[2])).toBeGreaterThan(0.5);
    }
    expect(Array.from(applyStainShift(Float32Array.from([1, 1, 1]), shift))).toEqual([1, 1, 1]);
    expect(applyStainShift(real[0], shift)).toEqual(applyStainShift(real[0], siteStainShift(1, 3)));
  });

  it('on a pure two-stain image the shifted stains are what a Macenko fit finds', () => {
    const shift = siteStainShift(0, 11);
    const tile = syntheticHeTile(96, 2, DEFAULT_MACENKO_TARGET.stainMatrix);
    const fit = fitMacenko(applyStainShift(tile, shift));
    expect(angleDegrees(fit.stainMatrix[0], shift.stainMatrix[0])).toBeLessThan(2);
    expect(angleDegrees(fit.stainMatrix[1], shift.stainMatrix[1])).toBeLessThan(2);
  });

  it('the OD map keeps what the stains do not explain', () => {
    const shift = siteStainShift(4, 5);
    const m = stainShiftMatrix(shift);
    // A direction orthogonal to both reference stains is left alone.
    const [h, e] = shift.reference;
    const n = [h[1] * e[2] - h[2] * e[1], h[2] * e[0] - h[0] * e[2], h[0] * e[1] - h[1] * e[0]];
    for (let r = 0; r < 3; r++) expect(m[3 * r] * n[0] + m[3 * r + 1] * n[1] + m[3 * r + 2] * n[2]).toBeCloseTo(n[r], 12);
    // The reference H maps to the scaled site H.
    for (let r = 0; r < 3; r++) {
      expect(m[3 * r] * h[0] + m[3 * r + 1] * h[1] + m[3 * r + 2] * h[2]).toBeCloseTo(shift.stainMatrix[0][r] * shift.concentrationScale[0], 12);
    }
  });

  it('rejects bad arguments', () => {
    expect(() => siteStainShift(-1, 1)).toThrow(ValidationError);
    expect(() => siteStainShift(0, NaN)).toThrow(ValidationError);
    expect(() => siteStainShift(0, 1, { rotationDegrees: [5, 50] })).toThrow(ValidationError);
    const bad = { ...siteStainShift(0, 1), concentrationScale: [0, 1] } as StainShift;
    expect(() => applyStainShift(real[0], bad)).toThrow(ValidationError);
  });
});

describe('stain preprocessing helpers', () => {
  it('createStainNormalizer and transformBatch work image by image', async () => {
    const imgs = await Promise.all(REAL_TILES.slice(0, 3).map((t) => decodeTile(path.join(REAL_SAMPLE_ROOT, t), 32)));
    const batch = new Float32Array(imgs.length * imgs[0].length);
    imgs.forEach((img, k) => batch.set(img, k * img.length));
    for (const target of [fitReinhard(imgs[0]), fitMacenko(imgs[0])]) {
      const normalize = createStainNormalizer(JSON.parse(JSON.stringify(target)));
      const out = transformBatch(batch, imgs.length, normalize);
      imgs.forEach((img, k) => expect(out.subarray(k * img.length, (k + 1) * img.length)).toEqual(normalize(img)));
    }
    const shifted = transformBatch(batch, imgs.length, createStainShifter(siteStainShift(0, 1)));
    expect(shifted.subarray(0, imgs[0].length)).toEqual(applyStainShift(imgs[0], siteStainShift(0, 1)));
    expect(() => transformBatch(batch, 5, (p) => p)).toThrow(ValidationError);
    expect(() => validateStainTarget({ method: 'other' })).toThrow(ValidationError);
    expect(() => validateStainTarget({ method: 'reinhard', space: 'cie-lab', mean: [1, 2, 3], std: [1, 1], pixels: 3 })).toThrow(ValidationError);
    expect(opticalDensity(batch).length).toBe(batch.length);
  });
});
