import { ValidationError } from '@histofed/fl-core';
import { mulberry32 } from '../prng';
import { checkTileGeometry, gridOrigins, randomOrigin, scaledImageSize } from './tile-geometry';

describe('tile geometry', () => {
  it('covers every pixel of the image with the fewest tiles, spread evenly from edge to edge', () => {
    for (const [w, h, size] of [
      [700, 460, 224],
      [350, 230, 224],
      [224, 224, 224],
      [701, 459, 100],
      [97, 61, 16],
    ]) {
      const origins = gridOrigins(w, h, size);
      expect(origins.length).toBe(Math.ceil(w / size) * Math.ceil(h / size));
      const covered = new Uint8Array(w * h);
      for (const o of origins) {
        expect(o.x).toBeGreaterThanOrEqual(0);
        expect(o.y).toBeGreaterThanOrEqual(0);
        expect(o.x + size).toBeLessThanOrEqual(w);
        expect(o.y + size).toBeLessThanOrEqual(h);
        for (let y = o.y; y < o.y + size; y++) for (let x = o.x; x < o.x + size; x++) covered[y * w + x] = 1;
      }
      expect(covered.every((c) => c === 1)).toBe(true);
    }
    // BreakHis at native resolution: 4 x 3 tiles of 224, first and last touching the edges.
    const grid = gridOrigins(700, 460, 224);
    expect(grid.map((o) => o.x).slice(0, 4)).toEqual([0, 159, 317, 476]);
    expect([...new Set(grid.map((o) => o.y))]).toEqual([0, 118, 236]);
  });

  it('draws random crops that always lie inside the image, reproducibly from the generator', () => {
    const rand = mulberry32(7);
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const o = randomOrigin(700, 460, 224, rand);
      expect(o.x).toBeGreaterThanOrEqual(0);
      expect(o.y).toBeGreaterThanOrEqual(0);
      expect(o.x + 224).toBeLessThanOrEqual(700);
      expect(o.y + 224).toBeLessThanOrEqual(460);
      seen.add(`${o.x},${o.y}`);
    }
    expect(seen.size).toBeGreaterThan(1500);
    const a = mulberry32(3);
    const b = mulberry32(3);
    expect(randomOrigin(700, 460, 224, a)).toEqual(randomOrigin(700, 460, 224, b));
    expect(randomOrigin(224, 224, 224, mulberry32(1))).toEqual({ x: 0, y: 0 });
  });

  it('scales images, and scales up those smaller than a tile so that the shorter side holds one', () => {
    expect(scaledImageSize(700, 460, { size: 224, scale: 1 })).toEqual({ width: 700, height: 460 });
    expect(scaledImageSize(700, 460, { size: 224, scale: 0.5 })).toEqual({ width: 350, height: 230 });
    expect(scaledImageSize(140, 92, { size: 96, scale: 1 })).toEqual({ width: 146, height: 96 });
    expect(scaledImageSize(700, 460, { size: 224, scale: 0.25 })).toEqual({ width: 341, height: 224 });
  });

  it('refuses a geometry or an image it cannot tile, naming the field', () => {
    expect(() => checkTileGeometry({ size: 8, scale: 1 })).toThrow(/tiles.size/);
    expect(() => checkTileGeometry({ size: 224, scale: 0 })).toThrow(/tiles.scale/);
    expect(() => gridOrigins(100, 100, 224)).toThrow(ValidationError);
    expect(() => randomOrigin(100, 300, 224, Math.random)).toThrow(/cannot hold a 224 px tile/);
  });
});
