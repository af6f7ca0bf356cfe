/** Parsers of benchmark command-line options: a bad value stops the benchmark naming the flag. */

export function int(name: string, s: string, min: number): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got ${s}`);
  return n;
}

export function num(name: string, s: string, min: number, max = Infinity): number {
  const n = Number(s);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name}: expected a number in [${min}, ${max}], got ${s}`);
  return n;
}

/** A comma-separated list of integers >= min (e.g. --seeds 1,2,3); a bad entry stops the benchmark naming the flag. */
export function ints(name: string, s: string, min: number): number[] {
  return s.split(',').map((x) => int(name, x.trim(), min));
}
