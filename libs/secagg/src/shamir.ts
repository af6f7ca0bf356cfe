import { randomBytes } from '@histofed/crypto';
import { SecAggError } from './errors';

/**
 * Shamir secret sharing over GF(2^8), byte by byte (as in SSSS): every secret byte is the constant
 * term of its own random polynomial of degree t-1. A share is [x, y_0, ..., y_{len-1}] with
 * x in 1..255; the x of a holder is chosen by the caller (split hands out x = 1..n in order).
 */

// GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1 (0x11b); 3 generates its multiplicative group.
const EXP = new Uint8Array(510);
const LOG = new Uint8Array(256);
{
  let v = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = EXP[i + 255] = v;
    LOG[v] = i;
    v ^= v << 1; // v * 3
    if (v & 0x100) v ^= 0x11b;
  }
}

const mul = (a: number, b: number): number => (a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]]);
const div = (a: number, b: number): number => (a === 0 ? 0 : EXP[LOG[a] + 255 - LOG[b]]);

/** Splits `secret` into n shares (x = 1..n) of which any t rebuild it and t-1 reveal nothing. */
export function split(secret: Uint8Array, t: number, n: number): Uint8Array[] {
  if (secret.length === 0) throw new SecAggError('shamir: the secret is empty');
  if (!Number.isInteger(n) || n < 1 || n > 255) throw new SecAggError(`shamir: share count must be an integer in [1, 255], got ${n}`);
  if (!Number.isInteger(t) || t < 1 || t > n) throw new SecAggError(`shamir: threshold must be an integer in [1, ${n}], got ${t}`);
  const coefficients = randomBytes(secret.length * (t - 1));
  const shares: Uint8Array[] = [];
  for (let x = 1; x <= n; x++) {
    const share = new Uint8Array(secret.length + 1);
    share[0] = x;
    for (let i = 0; i < secret.length; i++) {
      let y = 0; // Horner, highest coefficient first
      for (let d = t - 2; d >= 0; d--) y = mul(y, x) ^ coefficients[i * (t - 1) + d];
      share[i + 1] = mul(y, x) ^ secret[i];
    }
    shares.push(share);
  }
  return shares;
}

/** Lagrange basis values at `at` for the points `xs`. */
function lagrange(xs: readonly number[], at: number): number[] {
  return xs.map((xj, j) => {
    let l = 1;
    xs.forEach((xm, m) => {
      if (m !== j) l = mul(l, div(at ^ xm, xj ^ xm));
    });
    return l;
  });
}

function interpolate(points: readonly Uint8Array[], at: number): Uint8Array {
  const basis = lagrange(
    points.map((p) => p[0]),
    at,
  );
  const out = new Uint8Array(points[0].length - 1);
  points.forEach((p, j) => {
    for (let i = 0; i < out.length; i++) out[i] ^= mul(basis[j], p[i + 1]);
  });
  return out;
}

/**
 * Rebuilds the secret from at least `threshold` shares. Shares beyond the threshold are checked
 * against the polynomial the first t define, so one wrong share among more than t fails here
 * instead of yielding a wrong secret (with exactly t shares a wrong one cannot be detected).
 */
export function combine(shares: readonly Uint8Array[], threshold: number, what = 'secret'): Uint8Array {
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > 255) {
    throw new SecAggError(`${what}: threshold must be an integer in [1, 255], got ${threshold}`);
  }
  if (shares.length < threshold) {
    throw new SecAggError(`${what}: only ${shares.length} of ${threshold} shares (below the threshold)`);
  }
  const length = shares[0].length;
  const seen = new Set<number>();
  for (const share of shares) {
    if (share.length !== length || length < 2) {
      throw new SecAggError(`${what}: shares must all be the same length (>= 2 bytes), got ${length} and ${share.length}`);
    }
    if (share[0] === 0) throw new SecAggError(`${what}: a share has x = 0`);
    if (seen.has(share[0])) throw new SecAggError(`${what}: two shares have x = ${share[0]}`);
    seen.add(share[0]);
  }
  const base = shares.slice(0, threshold);
  for (const extra of shares.slice(threshold)) {
    const expected = interpolate(base, extra[0]);
    if (!expected.every((b, i) => b === extra[i + 1])) {
      throw new SecAggError(`${what}: the share with x = ${extra[0]} disagrees with the others (a share is wrong)`);
    }
  }
  return interpolate(base, 0);
}
