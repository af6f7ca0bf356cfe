import { ValidationError } from '@histofed/fl-core';

/** How images become tiles: square tiles of `size` pixels of the image scaled by `scale`. */
export interface TileGeometry {
  readonly size: number;
  readonly scale: number;
}

/** A tile's top-left corner in the scaled image. */
export interface TileOrigin {
  readonly x: number;
  readonly y: number;
}

export const MIN_TILE_SIZE = 16;
export const MAX_TILE_SIZE = 1024;

/** Throws ValidationError naming the field unless the geometry is usable. */
export function checkTileGeometry(g: TileGeometry, what = 'tiles'): void {
  if (!Number.isInteger(g.size) || g.size < MIN_TILE_SIZE || g.size > MAX_TILE_SIZE) {
    throw new ValidationError(`${what}.size: must be an integer in [${MIN_TILE_SIZE}, ${MAX_TILE_SIZE}], got ${g.size}`);
  }
  if (!Number.isFinite(g.scale) || g.scale < 0.05 || g.scale > 4) {
    throw new ValidationError(`${what}.scale: must be a number in [0.05, 4] (1 = native resolution), got ${g.scale}`);
  }
}

/**
 * Size of an image of width x height after scaling by `scale` (rounded). When that is smaller than
 * a tile in either direction, the image is scaled up further so that its shorter side is one tile:
 * every image yields at least one whole tile, without padding.
 */
export function scaledImageSize(width: number, height: number, g: TileGeometry): { width: number; height: number } {
  let w = Math.max(1, Math.round(width * g.scale));
  let h = Math.max(1, Math.round(height * g.scale));
  const short = Math.min(w, h);
  if (short < g.size) {
    const up = g.size / short;
    w = Math.max(g.size, Math.round(w * up));
    h = Math.max(g.size, Math.round(h * up));
  }
  return { width: w, height: h };
}

function axisOrigins(length: number, size: number): number[] {
  const n = Math.ceil(length / size);
  if (n <= 1) return [0];
  return Array.from({ length: n }, (_, i) => Math.round((i * (length - size)) / (n - 1)));
}

/**
 * The covering grid: the fewest tiles per axis that cover it (ceil(length / size)), spread evenly
 * from one edge to the other (so neighbours overlap a little unless the length is a multiple of the
 * size), in row-major order. A 700x460 image at 224 px gives 4 x 3 = 12 tiles.
 */
export function gridOrigins(width: number, height: number, size: number): TileOrigin[] {
  if (width < size || height < size) throw new ValidationError(`a ${width}x${height} image cannot hold a ${size} px tile`);
  const xs = axisOrigins(width, size);
  const ys = axisOrigins(height, size);
  return ys.flatMap((y) => xs.map((x) => ({ x, y })));
}

/** A uniformly random tile position inside the image (every tile lies fully inside). */
export function randomOrigin(width: number, height: number, size: number, rand: () => number): TileOrigin {
  if (width < size || height < size) throw new ValidationError(`a ${width}x${height} image cannot hold a ${size} px tile`);
  return {
    x: Math.min(width - size, Math.floor(rand() * (width - size + 1))),
    y: Math.min(height - size, Math.floor(rand() * (height - size + 1))),
  };
}
