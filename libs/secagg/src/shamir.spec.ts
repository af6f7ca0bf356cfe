import nacl from 'tweetnacl';
import { SecAggError } from './errors';
import { combine, split } from './shamir';

/** Every k-subset of 0..n-1, in order. */
function subsets(n: number, k: number): number[][] {
  if (k === 0) return [[]];
  if (n < k) return [];
  return [...subsets(n - 1, k - 1).map((s) => [...s, n - 1]), ...subsets(n - 1, k)];
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('shamir over GF(2^8)', () => {
  it('rebuilds the secret from every t-subset of the shares', () => {
    for (const [t, n] of [
      [1, 1],
      [1, 3],
      [2, 2],
      [2, 5],
      [3, 4],
      [3, 7],
      [4, 6],
      [5, 9],
    ]) {
      const secret = nacl.randomBytes(32);
      const shares = split(secret, t, n);
      expect(shares.map((s) => s[0])).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      for (const pick of subsets(n, t)) {
        expect(hex(combine(pick.map((i) => shares[i]), t))).toBe(hex(secret));
      }
      // Order does not matter, and all n shares (checked for consistency) give it too.
      expect(hex(combine([...shares].reverse(), t))).toBe(hex(secret));
    }
  });

  it('handles large share counts and odd secret lengths', () => {
    const secret = nacl.randomBytes(7);
    const shares = split(secret, 128, 255);
    expect(hex(combine(shares.slice(100, 228), 128))).toBe(hex(secret));
    expect(hex(combine(shares, 128))).toBe(hex(secret));
  });

  it('matches hand-computed values (AES field: 0x57 * 0x83 = 0xc1)', () => {
    // f(x) = 0x57 x: f(1) = 0x57 and f(0x83) = 0xc1 (FIPS-197 §4.2), so f(0) = 0.
    expect(Array.from(combine([Uint8Array.of(1, 0x57), Uint8Array.of(0x83, 0xc1)], 2))).toEqual([0]);
    // f(x) = 0x57 + 0x83 x: f(1) = 0xd4, f(2) = 0x57 ^ 0x1d = 0x4a, f(3) = 0x57 ^ 0x9e = 0xc9.
    expect(Array.from(combine([Uint8Array.of(1, 0xd4), Uint8Array.of(2, 0x4a)], 2))).toEqual([0x57]);
    expect(Array.from(combine([Uint8Array.of(3, 0xc9), Uint8Array.of(2, 0x4a), Uint8Array.of(1, 0xd4)], 2))).toEqual([0x57]);
  });

  it('t-1 shares are refused, and interpolating them gives a different value', () => {
    for (const [t, n] of [
      [2, 3],
      [3, 5],
      [5, 8],
    ]) {
      const secret = nacl.randomBytes(32);
      const shares = split(secret, t, n);
      expect(() => combine(shares.slice(0, t - 1), t)).toThrow(new RegExp(`only ${t - 1} of ${t} shares \\(below the threshold\\)`));
      if (t > 2) expect(hex(combine(shares.slice(0, t - 1), t - 1))).not.toBe(hex(secret));
      // t - 1 = 1 share of a degree-1 polynomial is f(x), not f(0): also not the secret.
      if (t === 2) expect(hex(shares[0].subarray(1))).not.toBe(hex(secret));
    }
  });

  it('uses fresh randomness: two splits of the same secret differ', () => {
    const secret = nacl.randomBytes(32);
    expect(hex(split(secret, 3, 5)[0])).not.toBe(hex(split(secret, 3, 5)[0]));
  });

  it('detects a wrong share when more than t shares are given; with exactly t it cannot', () => {
    const secret = nacl.randomBytes(32);
    const shares = split(secret, 3, 5);
    const bad = shares.map((s) => s.slice());
    bad[1][10] ^= 1;
    expect(() => combine(bad, 3, 'site x: s key')).toThrow(/site x: s key: the share with x = \d disagrees with the others/);
    expect(hex(combine(bad.slice(0, 3), 3))).not.toBe(hex(secret));
  });

  it('refuses malformed input with SecAggError', () => {
    const shares = split(nacl.randomBytes(32), 2, 3);
    const cases: [() => unknown, RegExp][] = [
      [() => split(new Uint8Array(0), 1, 1), /secret is empty/],
      [() => split(nacl.randomBytes(32), 4, 3), /threshold must be an integer in \[1, 3\], got 4/],
      [() => split(nacl.randomBytes(32), 0, 3), /threshold must be an integer/],
      [() => split(nacl.randomBytes(32), 2, 256), /share count must be an integer in \[1, 255\], got 256/],
      [() => combine([shares[0], shares[0]], 2), /two shares have x = 1/],
      [() => combine([shares[0], shares[1].subarray(0, 20)], 2), /same length/],
      [() => combine([shares[0], Uint8Array.of(0, ...shares[1].subarray(1))], 2), /x = 0/],
      [() => combine(shares, 0), /threshold must be an integer in \[1, 255\]/],
      [() => combine([], 1), /only 0 of 1 shares/],
    ];
    for (const [call, message] of cases) {
      expect(call).toThrow(SecAggError);
      expect(call).toThrow(message);
    }
  });
});
