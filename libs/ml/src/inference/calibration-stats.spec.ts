import { expectedCalibrationError } from '../metrics-extra';
import { predictiveEntropy } from '../uncertainty/measures';
import {
  ENTROPY_HISTOGRAM_BINS,
  eceOfCounts,
  entropyHistogram,
  mergeEntropyHistograms,
  mergeReliabilityCounts,
  reliabilityCounts,
  reliabilityTable,
  reliabilityTableOfCounts,
  reviewThresholdFor,
} from './calibration-stats';

describe('mergeable calibration statistics', () => {
  const probs = Float32Array.from([0.95, 0.05, 0.9, 0.1, 0.35, 0.65, 0.6, 0.4, 0.2, 0.8, 0.55, 0.45]);
  const labels = Int32Array.from([0, 1, 1, 1, 1, 0]);

  it('counts reliability as the ECE and the reliability table bin it, and the sites\' counts add up to the pooled ones', () => {
    const c = reliabilityCounts(probs, labels, 2);
    expect(c.counts.reduce((a, b) => a + b, 0)).toBe(6);
    expect(eceOfCounts(c)).toBeCloseTo(expectedCalibrationError(labels, probs, 2), 9);
    // Away from the bin edges (float32 0.6 sits on one), the same table as reliabilityTable.
    const inner = Float32Array.from([0.93, 0.07, 0.88, 0.12, 0.33, 0.67, 0.62, 0.38]);
    const innerLabels = Int32Array.from([0, 1, 1, 1]);
    const table = reliabilityTableOfCounts(reliabilityCounts(inner, innerLabels, 2));
    const expected = reliabilityTable(inner, innerLabels, 2);
    expect(table.map((t) => [t.count, t.accuracy])).toEqual(expected.map((t) => [t.count, t.accuracy]));
    table.forEach((t, i) => (t.confidence === null ? expect(expected[i].confidence).toBeNull() : expect(t.confidence).toBeCloseTo(expected[i].confidence!, 6)));
    // Two "sites" (rows 0-2 and 3-5): merged counts = counts of the pooled rows.
    const a = reliabilityCounts(probs.subarray(0, 6), labels.subarray(0, 3), 2);
    const b = reliabilityCounts(probs.subarray(6), labels.subarray(3), 2);
    const merged = mergeReliabilityCounts([a, b]);
    expect(merged.counts).toEqual(c.counts);
    expect(merged.correct).toEqual(c.correct);
    merged.confidenceSums.forEach((s, i) => expect(s).toBeCloseTo(c.confidenceSums[i], 6));
    expect(eceOfCounts({ counts: [0, 0], confidenceSums: [0, 0], correct: [0, 0] })).toBeNull();
    expect(() => mergeReliabilityCounts([a, { counts: [1], confidenceSums: [1], correct: [1] }])).toThrow(/part 1 does not have 10 bins/);
  });

  it('bins the predictive entropy with the wrong predictions per bin', () => {
    const h = entropyHistogram(probs, labels, 2);
    expect(h.counts).toHaveLength(ENTROPY_HISTOGRAM_BINS);
    expect(h.counts.reduce((x, y) => x + y, 0)).toBe(6);
    // Row 1 (0.9 / 0.1, label 1) is wrong: its entropy bin holds one error.
    const b = Math.floor(predictiveEntropy([0.9, 0.1], 2) * 100);
    expect(h.errors[b]).toBeGreaterThanOrEqual(1);
    expect(h.errors.reduce((x, y) => x + y, 0)).toBe(2); // rows 1 and 3 (0.6 / 0.4, label 1)
    // A uniform row lands in the last bin.
    expect(entropyHistogram([0.5, 0.5], [0], 2).counts[99]).toBe(1);
    const merged = mergeEntropyHistograms([h, h]);
    expect(merged.counts.reduce((x, y) => x + y, 0)).toBe(12);
  });

  it('reads the review threshold for a target rate off the histogram, with the accuracy of the unflagged images', () => {
    // 100 images, one per bin; the 30 in bins 70-99 are wrong.
    const counts = new Array<number>(100).fill(1);
    const errors = counts.map((_, b) => (b >= 70 ? 1 : 0));
    const c = reviewThresholdFor({ counts, errors }, 0.2);
    expect(c).toEqual({ threshold: 0.8, images: 100, flagged: 20, reviewRate: 0.2, accuracyAll: 0.7, accuracyUnflagged: 70 / 80 });
    // Rate 0: just above 1, above every entropy (flags nothing); rate 1: everything (no unflagged image).
    expect(reviewThresholdFor({ counts, errors }, 0)).toEqual(expect.objectContaining({ threshold: 1 + Number.EPSILON, flagged: 0, accuracyUnflagged: 0.7 }));
    expect(reviewThresholdFor({ counts, errors }, 1)).toEqual(expect.objectContaining({ threshold: 0, flagged: 100, accuracyUnflagged: null }));
    // Lumpy histogram: the closest achievable rate, on a tie the higher threshold (fewer flagged).
    const lumpy = new Array<number>(100).fill(0);
    lumpy[10] = 70;
    lumpy[50] = 30;
    expect(reviewThresholdFor({ counts: lumpy, errors: new Array(100).fill(0) }, 0.2)).toEqual(expect.objectContaining({ threshold: 0.5, flagged: 30 }));
    expect(reviewThresholdFor({ counts: lumpy, errors: new Array(100).fill(0) }, 0.15)).toEqual(expect.objectContaining({ threshold: 1 + Number.EPSILON, flagged: 0 }));
    expect(reviewThresholdFor({ counts: new Array(100).fill(0), errors: new Array(100).fill(0) }, 0.2)).toBeNull();
    expect(() => reviewThresholdFor({ counts, errors }, 1.5)).toThrow(/review rate/);
  });
});
