import { mulberry32 } from '../prng';
import { applyHedJitter, sampleHedJitter } from './hed-jitter';
import { syntheticHeTile } from './stain-test-images';

describe('HED jitter', () => {
  const tile = syntheticHeTile(32, 5);

  it('leaves an image unchanged with no jitter and keeps values in [0, 1]', () => {
    const same = applyHedJitter(tile, { alpha: [0, 0, 0], beta: [0, 0, 0] });
    let worst = 0;
    for (let i = 0; i < tile.length; i++) worst = Math.max(worst, Math.abs(same[i] - tile[i]));
    // Only the optical-density floor (1/255) changes pure white/black pixels.
    expect(worst).toBeLessThan(1 / 255 + 1e-6);
    const strong = applyHedJitter(tile, sampleHedJitter(mulberry32(1), 0.5, 0.5));
    expect(strong.every((v) => v >= 0 && v <= 1)).toBe(true);
    expect(strong).not.toBe(tile);
  });

  it('scales each stain on its own: more haematoxylin darkens the image, less lightens it', () => {
    const mean = (p: Float32Array) => p.reduce((a, b) => a + b, 0) / p.length;
    const more = applyHedJitter(tile, { alpha: [0.3, 0, 0], beta: [0, 0, 0] });
    const less = applyHedJitter(tile, { alpha: [-0.3, 0, 0], beta: [0, 0, 0] });
    expect(mean(more)).toBeLessThan(mean(tile));
    expect(mean(less)).toBeGreaterThan(mean(tile));
  });

  it('draws its parameters reproducibly within the bounds and refuses out-of-range strengths', () => {
    const a = sampleHedJitter(mulberry32(9), 0.05);
    expect(sampleHedJitter(mulberry32(9), 0.05)).toEqual(a);
    for (const v of [...a.alpha, ...a.beta]) expect(Math.abs(v)).toBeLessThanOrEqual(0.05);
    expect(() => sampleHedJitter(mulberry32(1), 0.9)).toThrow(/sigma/);
    expect(() => sampleHedJitter(mulberry32(1), 0.1, -1)).toThrow(/bias/);
  });
});
