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
