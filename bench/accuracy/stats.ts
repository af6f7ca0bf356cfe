/** Mean and sample standard deviation over folds. */
export interface MeanStd {
  readonly mean: number;
  readonly std: number;
  /** Folds with a value (AUC is undefined for a fold with one class). */
  readonly n: number;
}

const r4 = (x: number) => Number(x.toFixed(4));

/** Mean and sample (n - 1) standard deviation of the finite values; NaN-free: null-like values are skipped. */
export function meanStd(values: readonly (number | null)[]): MeanStd {
  const xs = values.filter((x): x is number => x !== null && Number.isFinite(x));
  if (xs.length === 0) return { mean: NaN, std: NaN, n: 0 };
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean: r4(mean), std: r4(std), n: xs.length };
}

export const pct = (m: MeanStd) => `${(100 * m.mean).toFixed(1)} ± ${(100 * m.std).toFixed(1)}`;
