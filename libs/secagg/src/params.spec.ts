import { SecAggError } from './errors';
import { SecAggParams, defaultThreshold, validateParams } from './params';

const params: SecAggParams = { runId: 'run-1', round: 3, neighbourCount: 4, threshold: 3, clipRange: 1, vectorLength: 10 };

describe('SecAgg parameters', () => {
  it('defaultThreshold is the smallest strict majority of the k+1 holders', () => {
    expect([2, 3, 4, 5, 6, 7, 10].map(defaultThreshold)).toEqual([2, 3, 3, 4, 4, 5, 6]);
    for (let k = 2; k <= 254; k++) expect(() => validateParams({ ...params, neighbourCount: k, threshold: defaultThreshold(k) })).not.toThrow();
  });

  it('accepts sound params and names the bad field otherwise', () => {
    expect(validateParams(params)).toBe(params);
    const cases: [Partial<SecAggParams>, RegExp][] = [
      [{ runId: '' }, /params.runId must be a non-empty string/],
      [{ round: -1 }, /params.round must be an integer in \[0, 4294967295\], got -1/],
      [{ round: 1.5 }, /params.round/],
      [{ neighbourCount: 1, threshold: 1 }, /params.neighbourCount must be an integer in \[2, 254\], got 1/],
      [{ neighbourCount: 255 }, /params.neighbourCount/],
      [{ threshold: 2 }, /params.threshold must be an integer with \(neighbourCount\+1\)\/2 < threshold <= neighbourCount \(3..4 for neighbourCount 4\), got 2/],
      [{ threshold: 5 }, /params.threshold .* got 5/],
      [{ neighbourCount: 5, threshold: 3 }, /4..5 for neighbourCount 5\), got 3/],
      [{ clipRange: 0 }, /clipRange must be a number/],
      [{ vectorLength: 0 }, /params.vectorLength must be an integer in \[1, 1073741824\], got 0/],
    ];
    for (const [patch, message] of cases) {
      expect(() => validateParams({ ...params, ...patch })).toThrow(SecAggError);
      expect(() => validateParams({ ...params, ...patch })).toThrow(message);
    }
  });
});
