/**
 * Attention heat maps (issue 18): an image with each tile's weight in the prediction of a bag
 * model laid over it, so a pathologist sees which regions decided. Written as a PNG of the
 * image's own size: every pixel is tinted by the largest weight of the tiles covering it, scaled
 * so that the image's top tile is the full colour (weights are relative within an image).
 */
import { mkdir } from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { ValidationError } from '@histofed/fl-core';

/** A tile of the original image (pixels) and its weight. */
export interface WeightedTile {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
  readonly weight: number;
}

/** Strength of the tint at the top tile (0: the image only, 1: the colour only). */
export const HEATMAP_OPACITY = 0.6;

/** A dark-blue -> magenta -> orange -> yellow ramp (perceptually ordered, readable on H&E pink) at t in [0, 1]. */
export function heatColour(t: number): [number, number, number] {
  const stops: [number, number, number][] = [
    [13, 8, 135],
    [156, 23, 158],
    [237, 121, 83],
    [240, 249, 33],
  ];
  const u = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(u));
  const f = u - i;
  return [0, 1, 2].map((c) => Math.round(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]))) as [number, number, number];
}

/**
 * Writes `out` (PNG): `image` decoded at its size with `tiles` laid over it. Returns the size.
 * Throws a ValidationError when no tile has a positive finite weight or a tile leaves the image.
 */
export async function writeAttentionHeatmap(image: string, tiles: readonly WeightedTile[], out: string): Promise<{ width: number; height: number }> {
  const top = tiles.reduce((m, t) => (Number.isFinite(t.weight) && t.weight > m ? t.weight : m), 0);
  if (!(top > 0)) throw new ValidationError(`heat map of ${path.basename(image)}: no tile has a positive weight`);
  const { data, info } = await sharp(image).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  const { width, height, channels } = info;
  const level = new Float32Array(width * height);
  for (const t of tiles) {
    if (t.x < 0 || t.y < 0 || t.x + t.width > width || t.y + t.height > height) {
      throw new ValidationError(`heat map of ${path.basename(image)}: tile (${t.x}, ${t.y}) ${t.width}x${t.height} leaves the ${width}x${height} image`);
    }
    const v = Math.max(0, t.weight) / top;
    for (let y = t.y; y < t.y + t.height; y++) {
      for (let x = t.x; x < t.x + t.width; x++) if (v > level[y * width + x]) level[y * width + x] = v;
    }
  }
  const rgb = Buffer.alloc(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    const v = level[p];
    const colour = heatColour(v);
    const a = HEATMAP_OPACITY * v;
    for (let c = 0; c < 3; c++) rgb[p * 3 + c] = Math.round((1 - a) * data[p * channels + c] + a * colour[c]);
  }
  await mkdir(path.dirname(out), { recursive: true });
  await sharp(rgb, { raw: { width, height, channels: 3 } }).png().toFile(out);
  return { width, height };
}

/**
 * Heat map file names for the images of one prediction run: the image's base name with the
 * extension '.attention.png'; a name already taken gets '-2', '-3', ... (images of the same name in
 * other folders). Nothing can leave the directory: only the base name is used.
 */
export function heatmapNamer(): (image: string) => string {
  const taken = new Set<string>();
  return (image) => {
    const stem = path.basename(image).replace(/\.[A-Za-z0-9]+$/, '') || 'image';
    let name = `${stem}.attention.png`;
    for (let k = 2; taken.has(name); k++) name = `${stem}-${k}.attention.png`;
    taken.add(name);
    return name;
  };
}
