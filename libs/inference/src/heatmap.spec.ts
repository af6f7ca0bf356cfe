import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { ValidationError } from '@histofed/fl-core';
import { heatColour, heatmapNamer, writeAttentionHeatmap } from './heatmap';

describe('attention heat maps', () => {
  let tmp: string;
  let image: string;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'histofed-heatmap-'));
    image = path.join(tmp, 'slide.png');
    // A flat H&E-pink 70x46 image (the BreakHis aspect ratio).
    await sharp({ create: { width: 70, height: 46, channels: 3, background: { r: 230, g: 180, b: 210 } } }).png().toFile(image);
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it("writes a PNG of the image's size, tinted most where the heaviest tile lies and not at all under a weight of 0", async () => {
    const out = path.join(tmp, 'maps', 'slide.attention.png');
    const tiles = [
      { x: 0, y: 0, width: 35, height: 46, weight: 0 },
      { x: 35, y: 0, width: 35, height: 23, weight: 0.8 },
      { x: 35, y: 23, width: 35, height: 23, weight: 0.2 },
    ];
    expect(await writeAttentionHeatmap(image, tiles, out)).toEqual({ width: 70, height: 46 });
    const { data, info } = await sharp(out).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([70, 46]);
    const pixel = (x: number, y: number) => Array.from(data.subarray((y * 70 + x) * info.channels, (y * 70 + x) * info.channels + 3));
    expect(pixel(10, 10)).toEqual([230, 180, 210]); // weight 0: the image as it is
    const distance = (p: number[]) => Math.hypot(p[0] - 230, p[1] - 180, p[2] - 210);
    expect(distance(pixel(50, 10))).toBeGreaterThan(distance(pixel(50, 40)));
    expect(distance(pixel(50, 40))).toBeGreaterThan(0);
    // The top tile is the full colour at the set opacity.
    const top = heatColour(1);
    expect(pixel(50, 10)).toEqual([0, 1, 2].map((c) => Math.round(0.4 * [230, 180, 210][c] + 0.6 * top[c])));
  });

  it('refuses tiles outside the image and maps without a positive weight, naming the image', async () => {
    await expect(writeAttentionHeatmap(image, [{ x: 60, y: 0, width: 20, height: 10, weight: 1 }], path.join(tmp, 'x.png'))).rejects.toThrow(
      /slide.png: tile \(60, 0\) 20x10 leaves the 70x46 image/,
    );
    await expect(writeAttentionHeatmap(image, [{ x: 0, y: 0, width: 20, height: 10, weight: 0 }], path.join(tmp, 'y.png'))).rejects.toThrow(ValidationError);
  });

  it('names heat maps after the image, numbering repeated names, without leaving the directory', () => {
    const name = heatmapNamer();
    expect(name('/data/ward 3/SOB_B_A-14-22549AB-40-001.png')).toBe('SOB_B_A-14-22549AB-40-001.attention.png');
    expect(name('/data/ward 4/SOB_B_A-14-22549AB-40-001.tif')).toBe('SOB_B_A-14-22549AB-40-001-2.attention.png');
    expect(name('../../etc/x.png')).toBe('x.attention.png');
    expect(name('no-extension')).toBe('no-extension.attention.png');
  });
});
