import type { BreakHisMagnification, BreakHisSubtypeCode } from './breakhis-names';

/**
 * Draws one H&E-like synthetic tile into raw RGB bytes. Pink eosin stroma with fibre texture,
 * optional lumens or mucin pools, and haematoxylin-purple nuclei whose number, size, shape,
 * darkness and arrangement depend on the subtype:
 *   benign    -> fewer, small, round, regularly spaced nuclei (glands lined by one layer, stroma);
 *   malignant -> more, larger, irregular, darker nuclei in clusters, single files or stacked papillae.
 * The subtypes overlap on purpose (phyllodes tumours are cellular, mucinous carcinoma is sparse and
 * pale) and magnification changes nucleus size and count, so size alone does not give the label.
 */

// Math functions as module constants: under Jest (a vm context) every lookup of a global such as
// `Math` is ~50x slower than a local one, which made the per-pixel loops crawl.
const { PI, atan2, ceil, cos, floor, max, min, round, sin, sqrt } = Math;

type Rgb = readonly [number, number, number];
type Layout = 'glands' | 'spindles' | 'clusters' | 'files' | 'mucin' | 'papillae';

interface SubtypeStyle {
  /** Nuclei in a 140x92 field at 100X. */
  readonly count: number;
  /** Nucleus radius in pixels for a 140x92 tile at 100X. */
  readonly radius: number;
  /** Relative spread of radii between nuclei. */
  readonly radiusSpread: number;
  /** 0 = smooth ellipse; 0.35 = very irregular outline. */
  readonly irregularity: number;
  /** Minor/major axis ratio range. */
  readonly aspect: readonly [number, number];
  /** 0 = pale purple; 1 = nearly black-blue. */
  readonly darkness: number;
  readonly layout: Layout;
  readonly stroma: Rgb;
}

const STYLES: Readonly<Record<BreakHisSubtypeCode, SubtypeStyle>> = {
  A: { count: 34, radius: 2.2, radiusSpread: 0.1, irregularity: 0.04, aspect: [0.8, 1], darkness: 0.3, layout: 'glands', stroma: [234, 172, 200] },
  F: { count: 26, radius: 2.1, radiusSpread: 0.12, irregularity: 0.05, aspect: [0.6, 0.9], darkness: 0.28, layout: 'glands', stroma: [238, 180, 204] },
  PT: { count: 52, radius: 2.3, radiusSpread: 0.15, irregularity: 0.08, aspect: [0.35, 0.6], darkness: 0.42, layout: 'spindles', stroma: [232, 168, 198] },
  TA: { count: 42, radius: 2.2, radiusSpread: 0.1, irregularity: 0.04, aspect: [0.8, 1], darkness: 0.35, layout: 'glands', stroma: [236, 174, 202] },
  DC: { count: 82, radius: 3.3, radiusSpread: 0.3, irregularity: 0.3, aspect: [0.55, 1], darkness: 0.75, layout: 'clusters', stroma: [228, 164, 196] },
  LC: { count: 66, radius: 2.6, radiusSpread: 0.2, irregularity: 0.18, aspect: [0.6, 1], darkness: 0.62, layout: 'files', stroma: [232, 168, 198] },
  MC: { count: 40, radius: 3.1, radiusSpread: 0.3, irregularity: 0.25, aspect: [0.55, 1], darkness: 0.6, layout: 'mucin', stroma: [230, 170, 200] },
  PC: { count: 78, radius: 3.0, radiusSpread: 0.28, irregularity: 0.25, aspect: [0.5, 0.95], darkness: 0.7, layout: 'papillae', stroma: [228, 166, 198] },
};

/** Apparent scale of structures at each magnification, relative to 100X. */
const MAG_SCALE: Readonly<Record<BreakHisMagnification, number>> = { 40: 0.62, 100: 1, 200: 1.4, 400: 1.95 };

const PALE_NUCLEUS: Rgb = [128, 84, 172];
const DARK_NUCLEUS: Rgb = [52, 26, 96];
const LUMEN: Rgb = [246, 236, 242];
const MUCIN: Rgb = [214, 208, 232];
const CYTOPLASM: Rgb = [206, 138, 192];

export interface TileSpec {
  readonly width: number;
  readonly height: number;
  readonly subtype: BreakHisSubtypeCode;
  readonly magnification: BreakHisMagnification;
  /** Per-patient stain multipliers for R, G, B (around 1). */
  readonly tint: Rgb;
  /** Per-patient multipliers of nucleus count and size (around 1). */
  readonly densityFactor: number;
  readonly sizeFactor: number;
}

interface Nucleus {
  x: number;
  y: number;
  r: number;
  aspect: number;
  theta: number;
  dark: number;
}

/** Renders a tile; `rand` is the only source of randomness, so the result is deterministic. */
export function renderTile(spec: TileSpec, rand: () => number): Buffer {
  const { width: W, height: H } = spec;
  const style = STYLES[spec.subtype];
  const resolution = sqrt((W * H) / (140 * 92));
  const mag = MAG_SCALE[spec.magnification];
  const unit = resolution * mag; // pixels per "100X, 140x92" pixel
  const gauss = (): number => (rand() + rand() + rand() - 1.5) * 1.15; // ~N(0,1), bounded
  const buf = new Float32Array(W * H * 3);

  paintStroma(buf, W, H, style.stroma, unit, rand);

  const count = max(3, round((style.count * spec.densityFactor * (0.85 + 0.3 * rand())) / (mag * mag)));
  const baseR = style.radius * spec.sizeFactor * unit;
  const makeNucleus = (x: number, y: number, scale = 1, theta?: number): Nucleus => ({
    x,
    y,
    r: max(0.8, baseR * scale * (1 + style.radiusSpread * gauss())),
    aspect: style.aspect[0] + (style.aspect[1] - style.aspect[0]) * rand(),
    theta: theta ?? rand() * PI,
    dark: min(1, max(0, style.darkness + 0.12 * gauss())),
  });
  const nuclei: Nucleus[] = [];
  const scatter = (n: number): void => {
    // jittered grid: regular spacing
    const cols = max(1, round(sqrt((n * W) / H)));
    const rows = max(1, ceil(n / cols));
    const cw = W / cols;
    const rh = H / rows;
    for (let i = 0; i < n; i++) {
      const c = i % cols;
      const r = floor(i / cols);
      nuclei.push(makeNucleus((c + 0.5 + 0.5 * (rand() - 0.5)) * cw, (r + 0.5 + 0.5 * (rand() - 0.5)) * rh));
    }
  };

  // A gland: a lumen lined by `layers` rings of nuclei (one regular ring in benign tissue).
  const addGland = (cx: number, cy: number, rx: number, ry: number, theta: number, layers: number, dropout: number): number => {
    paintBlob(buf, W, H, cx, cy, rx, ry, theta, 0.12, rand, LUMEN, 0.9, 0.15);
    let added = 0;
    for (let layer = 0; layer < layers; layer++) {
      const ringR = 1 + (baseR * (1 + 2.1 * layer)) / max(rx, ry);
      const perimeter = PI * (rx + ry) * ringR;
      const n = max(4, floor(perimeter / (baseR * 2.6)));
      for (let k = 0; k < n; k++) {
        if (rand() < dropout) continue;
        const a = (2 * PI * (k + 0.2 * (rand() - 0.5))) / n;
        const u = cos(a) * rx * ringR;
        const v = sin(a) * ry * ringR;
        const x = cx + u * cos(theta) - v * sin(theta) + 0.3 * baseR * gauss() * layer;
        const y = cy + u * sin(theta) + v * cos(theta) + 0.3 * baseR * gauss() * layer;
        nuclei.push(makeNucleus(x, y, 1, a + theta));
        added++;
      }
    }
    return added;
  };
  // A small crowded group of nuclei of this subtype's kind.
  const addCluster = (n: number, spread: number): void => {
    const cx = rand() * W;
    const cy = rand() * H;
    for (let i = 0; i < n; i++) nuclei.push(makeNucleus(cx + spread * gauss(), cy + spread * gauss()));
  };

  switch (style.layout) {
    case 'glands': {
      // Lumens lined by a single regular layer of nuclei, a few nuclei in the stroma between.
      const glands = max(1, round((spec.subtype === 'TA' ? 5 : 3) / (mag * mag) + rand()));
      let lining = 0;
      for (let g = 0; g < glands && lining < count; g++) {
        const rx = (spec.subtype === 'TA' ? 7 : 10) * unit * (0.7 + 0.6 * rand());
        const ry = rx * (spec.subtype === 'F' ? 0.3 + 0.2 * rand() : 0.7 + 0.3 * rand());
        lining += addGland(rand() * W, rand() * H, rx, ry, rand() * PI, 1, 0.08);
      }
      scatter(max(2, round((count - lining) * 0.6)));
      // Some benign fields show a small crowded (hyperplastic) group.
      if (rand() < 0.35) addCluster(round(6 + 8 * rand()), 2.5 * baseR);
      break;
    }
    case 'spindles': {
      // Cellular stroma: elongated nuclei roughly aligned with the fibres, evenly spread.
      const direction = rand() * PI;
      const start = nuclei.length;
      scatter(count);
      for (let i = start; i < nuclei.length; i++) nuclei[i].theta = direction + 0.35 * gauss();
      break;
    }
    case 'clusters': {
      // Nests of crowded, pleomorphic nuclei plus a few scattered ones.
      // Some carcinomas still form (crowded, multi-layered) gland-like spaces.
      if (rand() < 0.4) {
        const rx = 8 * unit * (0.7 + 0.6 * rand());
        addGland(rand() * W, rand() * H, rx, rx * (0.6 + 0.4 * rand()), rand() * PI, 2, 0.2);
      }
      const nests = 2 + floor(rand() * 3);
      const centres = Array.from({ length: nests }, () => [rand() * W, rand() * H] as const);
      const spread = 0.13 * min(W, H) * max(1, sqrt(count / 60));
      for (let i = 0; i < count; i++) {
        if (rand() < 0.15) {
          nuclei.push(makeNucleus(rand() * W, rand() * H));
        } else {
          const [cx, cy] = centres[floor(rand() * nests)];
          nuclei.push(makeNucleus(cx + spread * gauss(), cy + spread * gauss()));
        }
      }
      break;
    }
    case 'files': {
      // Discohesive cells in single files ("Indian file") across the stroma.
      const lines = 3 + floor(rand() * 3);
      const perLine = ceil((count * 0.8) / lines);
      for (let l = 0; l < lines; l++) {
        const dir = rand() * PI;
        const x0 = rand() * W;
        const y0 = rand() * H;
        for (let k = 0; k < perLine; k++) {
          const t = (k - perLine / 2) * baseR * 2.5;
          const bend = 0.15 * sin(k * 0.4 + l);
          nuclei.push(makeNucleus(x0 + t * cos(dir + bend) + gauss(), y0 + t * sin(dir + bend) + gauss(), 0.9, dir));
        }
      }
      for (let i = 0; i < count * 0.2; i++) nuclei.push(makeNucleus(rand() * W, rand() * H));
      break;
    }
    case 'mucin': {
      // Pale mucin lakes with small floating clusters of tumour cells.
      const lakes = 1 + floor(rand() * 2);
      const centres: (readonly [number, number])[] = [];
      for (let k = 0; k < lakes; k++) {
        const cx = rand() * W;
        const cy = rand() * H;
        const rx = (0.25 + 0.2 * rand()) * W;
        paintBlob(buf, W, H, cx, cy, rx, rx * (0.5 + 0.4 * rand()), rand() * PI, 0.25, rand, MUCIN, 0.85, 0.12);
        centres.push([cx, cy]);
      }
      for (let i = 0; i < count; i++) {
        const [cx, cy] = centres[i % centres.length];
        const groupAngle = (i % 5) * 1.26 + rand() * 0.3;
        const dist = (0.1 + 0.25 * rand()) * W;
        nuclei.push(makeNucleus(cx + cos(groupAngle) * dist + 2.2 * baseR * gauss(), cy + sin(groupAngle) * dist + 2.2 * baseR * gauss()));
      }
      break;
    }
    case 'papillae': {
      // Finger-like fibrovascular cores lined by stacked, crowded nuclei, lumen around them.
      paintBlob(buf, W, H, W / 2, H / 2, W * 0.6, H * 0.6, 0, 0.3, rand, LUMEN, 0.45, 0.1);
      const fronds = 2 + floor(rand() * 2);
      const perFrond = ceil(count / fronds);
      for (let f = 0; f < fronds; f++) {
        let x = rand() * W;
        let y = rand() * H;
        let dir = rand() * 2 * PI;
        for (let k = 0; k < perFrond; k += 2) {
          dir += 0.25 * gauss();
          x += cos(dir) * baseR * 1.6;
          y += sin(dir) * baseR * 1.6;
          const nx = -sin(dir) * baseR * 1.8;
          const ny = cos(dir) * baseR * 1.8;
          nuclei.push(makeNucleus(x + nx, y + ny, 1, dir + PI / 2));
          nuclei.push(makeNucleus(x - nx, y - ny, 1, dir + PI / 2));
        }
      }
      break;
    }
  }

  // Fibroblasts: small, pale, spindle-shaped nuclei scattered through the stroma of every subtype.
  const fibroblasts = round((10 + 8 * rand()) / (mag * mag));
  for (let i = 0; i < fibroblasts; i++) {
    nuclei.push({ x: rand() * W, y: rand() * H, r: 2.2 * unit * (0.8 + 0.4 * rand()), aspect: 0.3 + 0.15 * rand(), theta: rand() * PI, dark: 0.2 + 0.2 * rand() });
  }

  // Cytoplasm: a faint purple-pink halo around epithelial nuclei, drawn first so nuclei sit on it.
  for (const n of nuclei) {
    if (n.aspect < 0.5) continue;
    paintBlob(buf, W, H, n.x, n.y, n.r * 2.1, n.r * 1.8, n.theta, 0, rand, CYTOPLASM, 0.3, 0);
  }
  for (const n of nuclei) {
    const colour = mix(PALE_NUCLEUS, DARK_NUCLEUS, n.dark);
    paintBlob(buf, W, H, n.x, n.y, n.r, n.r * n.aspect, n.theta, style.irregularity, rand, colour, 0.92, 0.22);
  }

  smooth(buf, W, H);
  return finish(buf, W, H, spec.tint, rand);
}

function mix(a: Rgb, b: Rgb, t: number): Rgb {
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

/** Eosin stroma: base colour modulated by oriented fibres and a slow blotchy component. */
function paintStroma(buf: Float32Array, W: number, H: number, base: Rgb, unit: number, rand: () => number): void {
  const fibreDir = rand() * PI;
  const waves = [0, 1, 2].map((k) => {
    const dir = fibreDir + (rand() - 0.5) * 0.5 + PI / 2;
    const freq = (k === 2 ? 0.08 : 0.35 + 0.4 * rand()) / unit;
    return { kx: cos(dir) * freq, ky: sin(dir) * freq, phase: rand() * 2 * PI, amp: k === 2 ? 0.5 : 0.35 };
  });
  const blotch = { kx: (0.03 + 0.03 * rand()) / unit, ky: (0.03 + 0.03 * rand()) / unit, phase: rand() * 6.28 };
  // sin(kx x + ky y + p) = sin(kx x + p) cos(ky y) + cos(kx x + p) sin(ky y): tables per row and column.
  const xs = waves.map((w) => ({
    s: Float32Array.from({ length: W }, (_, x) => w.amp * sin(w.kx * x + w.phase)),
    c: Float32Array.from({ length: W }, (_, x) => w.amp * cos(w.kx * x + w.phase)),
  }));
  const ys = waves.map((w) => ({
    s: Float32Array.from({ length: H }, (_, y) => sin(w.ky * y)),
    c: Float32Array.from({ length: H }, (_, y) => cos(w.ky * y)),
  }));
  const bx = Float32Array.from({ length: W }, (_, x) => sin(blotch.kx * x + blotch.phase));
  const by = Float32Array.from({ length: H }, (_, y) => cos(blotch.ky * y + blotch.phase));
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let f = 0;
      for (let k = 0; k < waves.length; k++) f += xs[k].s[x] * ys[k].c[y] + xs[k].c[x] * ys[k].s[y];
      const b = bx[x] * by[y];
      const shade = 1 + 0.045 * f + 0.03 * b;
      const i = (y * W + x) * 3;
      buf[i] = base[0] * shade;
      buf[i + 1] = base[1] * (shade - 0.02 * b);
      buf[i + 2] = base[2] * shade;
    }
  }
}

/**
 * Alpha-blends a soft-edged, optionally irregular ellipse of `colour` with per-pixel texture
 * (`grain` = relative brightness noise inside the blob).
 */
function paintBlob(
  buf: Float32Array,
  W: number,
  H: number,
  cx: number,
  cy: number,
  rx: number,
  ry: number,
  theta: number,
  irregularity: number,
  rand: () => number,
  colour: Rgb,
  opacity: number,
  grain: number,
): void {
  const p1 = rand() * 6.283;
  const p2 = rand() * 6.283;
  const a1 = 0.5 + 0.5 * rand();
  const reach = max(rx, ry) * (1 + irregularity) + 1.5;
  const x0 = max(0, floor(cx - reach));
  const x1 = min(W - 1, ceil(cx + reach));
  const y0 = max(0, floor(cy - reach));
  const y1 = min(H - 1, ceil(cy + reach));
  const cosT = cos(theta);
  const sinT = sin(theta);
  const edge = max(1, min(rx, ry)); // ~1 px soft edge
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      const u = dx * cosT + dy * sinT;
      const v = -dx * sinT + dy * cosT;
      let d = sqrt((u / rx) * (u / rx) + (v / ry) * (v / ry));
      if (irregularity > 0) {
        const ang = atan2(v, u);
        d /= 1 + irregularity * (a1 * sin(2 * ang + p1) + (1 - a1) * sin(3 * ang + p2));
      }
      let alpha = (1 - d) * edge + 0.5;
      if (alpha <= 0) continue;
      alpha = min(1, alpha) * opacity;
      const g = grain > 0 ? 1 + grain * (rand() - 0.5) : 1;
      const i = (y * W + x) * 3;
      buf[i] += (colour[0] * g - buf[i]) * alpha;
      buf[i + 1] += (colour[1] * g - buf[i + 1]) * alpha;
      buf[i + 2] += (colour[2] * g - buf[i + 2]) * alpha;
    }
  }
}

/** A [1 2 1]/4 blur along x then y (optics are never perfectly sharp). */
function smooth(buf: Float32Array, W: number, H: number): void {
  const tmp = new Float32Array(buf.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const l = (y * W + max(0, x - 1)) * 3;
      const m = (y * W + x) * 3;
      const r = (y * W + min(W - 1, x + 1)) * 3;
      for (let c = 0; c < 3; c++) tmp[m + c] = 0.25 * buf[l + c] + 0.5 * buf[m + c] + 0.25 * buf[r + c];
    }
  }
  for (let y = 0; y < H; y++) {
    const up = max(0, y - 1);
    const down = min(H - 1, y + 1);
    for (let x = 0; x < W; x++) {
      const m = (y * W + x) * 3;
      const u = (up * W + x) * 3;
      const d = (down * W + x) * 3;
      for (let c = 0; c < 3; c++) buf[m + c] = 0.25 * tmp[u + c] + 0.5 * tmp[m + c] + 0.25 * tmp[d + c];
    }
  }
}

/** Applies the stain tint, a small exposure change and sensor noise; rounds to bytes. */
function finish(buf: Float32Array, W: number, H: number, tint: Rgb, rand: () => number): Buffer {
  const exposure = 1 + 0.06 * (rand() - 0.5);
  const out = Buffer.alloc(W * H * 3);
  for (let i = 0; i < buf.length; i += 3) {
    for (let c = 0; c < 3; c++) {
      const noise = (rand() - 0.5) * 14;
      const v = buf[i + c] * tint[c] * exposure + noise;
      out[i + c] = v <= 0 ? 0 : v >= 255 ? 255 : round(v);
    }
  }
  return out;
}
