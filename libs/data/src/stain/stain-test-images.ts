import { hashSeed, mulberry32 } from '../prng';
import { composeStains, DEFAULT_MACENKO_TARGET } from './macenko';
import { unit3, type RgbPixels, type Vec3 } from './pixels';

/**
 * Test fixtures for the stain module (not exported from the library): synthetic H&E tiles composed
 * from known stain vectors and concentrations.
 */

/** Ruifrok & Johnston's hematoxylin OD vector and the Macenko reference eosin. */
export const KNOWN_STAINS: [Vec3, Vec3] = [unit3([0.65, 0.7, 0.29]), DEFAULT_MACENKO_TARGET.stainMatrix[1]];

/**
 * A size x size H&E-like tile: round nuclei (mostly hematoxylin) on stroma (mostly eosin), some mixed
 * regions and a few white background holes. Pixels are quantized to 8 bits like a decoded PNG.
 */
export function syntheticHeTile(size: number, seed: number, stains: readonly [Vec3, Vec3] = KNOWN_STAINS): RgbPixels {
  const rand = mulberry32(hashSeed(seed, 'he-tile'));
  const nuclei = Array.from({ length: Math.max(3, Math.round((size * size) / 180)) }, () => ({
    x: rand() * size,
    y: rand() * size,
    r: 2 + rand() * (size / 16),
  }));
  const holes = Array.from({ length: 2 }, () => ({ x: rand() * size, y: rand() * size, r: size / 10 }));
  const c = new Float64Array(size * size * 2);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = y * size + x;
      const inside = (d: { x: number; y: number; r: number }): boolean => (x - d.x) ** 2 + (y - d.y) ** 2 < d.r * d.r;
      let ch: number;
      let ce: number;
      if (holes.some(inside)) {
        ch = 0.03 * rand();
        ce = 0.03 * rand();
      } else if (nuclei.some(inside)) {
        ch = 0.8 + 0.8 * rand();
        ce = 0.1 * rand() * rand();
      } else if (((x >> 3) + (y >> 3)) % 3 === 0) {
        ch = 0.2 + 0.5 * rand();
        ce = 0.3 + 0.6 * rand();
      } else {
        ch = 0.08 * rand() * rand();
        ce = 0.8 + 0.7 * rand();
      }
      c[2 * p] = ch;
      c[2 * p + 1] = ce;
    }
  }
  const pixels = composeStains(stains, c);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.round(pixels[i] * 255) / 255;
  return pixels;
}

/** Pearson correlation of two equally long arrays. */
export function correlation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i];
    mb += b[i];
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) ** 2;
    sbb += (b[i] - mb) ** 2;
  }
  return sab / Math.sqrt(saa * sbb);
}

/** Luminance (Rec. 601 weights) of each pixel. */
export function grey(pixels: RgbPixels): Float64Array {
  const out = new Float64Array(pixels.length / 3);
  for (let p = 0; p < out.length; p++) out[p] = 0.299 * pixels[3 * p] + 0.587 * pixels[3 * p + 1] + 0.114 * pixels[3 * p + 2];
  return out;
}

/** Mean absolute difference. */
export function meanAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

/** Decodes a PNG into a size x size RGB tile in [0, 1] (centre crop), for tests on real images. */
export async function decodeTile(file: string, size: number): Promise<RgbPixels> {
  const { default: sharp } = await import('sharp');
  const data = await sharp(file).removeAlpha().toColourspace('srgb').resize(size, size, { fit: 'cover' }).raw().toBuffer();
  return Float32Array.from(data, (b) => b / 255);
}

/** A few real BreakHis images (relative to the sample root) of different subtypes and magnifications. */
export const REAL_TILES = [
  'BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-22549AB/100X/SOB_B_A-14-22549AB-100-001.png',
  'BreaKHis_v1/histology_slides/breast/malignant/SOB/ductal_carcinoma/SOB_M_DC_14-12312/100X/SOB_M_DC-14-12312-100-041.png',
  'BreaKHis_v1/histology_slides/breast/malignant/SOB/papillary_carcinoma/SOB_M_PC_15-190EF/400X/SOB_M_PC-15-190EF-400-014.png',
  'BreaKHis_v1/histology_slides/breast/benign/SOB/phyllodes_tumor/SOB_B_PT_14-29315EF/200X/SOB_B_PT-14-29315EF-200-014.png',
];
