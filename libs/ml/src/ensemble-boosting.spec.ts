import { ValidationError } from '@histofed/fl-core';
import { boostingImageWeights, rowWeightsFromImages } from './ensemble-boosting';

/** Rows [p(0), p(1)] from each image's p(1). */
const rowsOf = (p1: number[]) => Float32Array.from(p1.flatMap((p) => [1 - p, p]));
const classMean = (w: Float32Array, labels: number[], c: number) => {
  const xs = labels.map((y, i) => (y === c ? w[i] : NaN)).filter((x) => !Number.isNaN(x));
  return xs.reduce((a, b) => a + b, 0) / xs.length;
};

describe('boostingImageWeights', () => {
  const labels = [0, 0, 0, 0, 1, 1, 1];
  // class 0: right, right, unsure, wrong; class 1: right, wrong, very wrong
  const p1 = [0.05, 0.1, 0.5, 0.9, 0.95, 0.3, 0.01];

  it('gives misclassified images more weight: w = exp(strength * (1 - p(y))) normalized to mean 1 per class', () => {
    const w = boostingImageWeights(rowsOf(p1), labels, 2);
    expect(w[3]).toBeGreaterThan(w[2]);
    expect(w[2]).toBeGreaterThan(w[1]);
    expect(w[1]).toBeGreaterThan(w[0]);
    expect(w[6]).toBeGreaterThan(w[5]);
    expect(w[5]).toBeGreaterThan(w[4]);
    const raw = p1.map((p, i) => Math.exp(2 * (1 - (labels[i] === 1 ? p : 1 - p))));
    const mean0 = (raw[0] + raw[1] + raw[2] + raw[3]) / 4;
    const mean1 = (raw[4] + raw[5] + raw[6]) / 3;
    raw.forEach((r, i) => expect(w[i]).toBeCloseTo(r / (labels[i] === 0 ? mean0 : mean1), 5));
  });

  it('keeps the mean at 1 within each class (the class balance is the class weights\u2019 job)', () => {
    for (const strength of [0.5, 2, 5]) {
      const w = boostingImageWeights(rowsOf(p1), labels, 2, { strength });
      expect(classMean(w, labels, 0)).toBeCloseTo(1, 5);
      expect(classMean(w, labels, 1)).toBeCloseTo(1, 5);
    }
    // strength 0, or an ensemble equally right on every image of a class: all 1
    expect(Array.from(boostingImageWeights(rowsOf(p1), labels, 2, { strength: 0 }))).toEqual(labels.map(() => 1));
    expect(Array.from(boostingImageWeights(rowsOf([0.2, 0.2, 0.7]), [0, 0, 1], 2))).toEqual([1, 1, 1]);
  });

  it('respects the cap: largest / smallest within a class at most maxRatio, every weight in [1/maxRatio, maxRatio]', () => {
    const many = Array.from({ length: 40 }, (_, i) => (i === 0 ? 0.999 : 0.001)); // one terrible error among 39 right
    const lab = many.map(() => 0);
    for (const maxRatio of [1, 3, 20]) {
      const w = boostingImageWeights(rowsOf(many), lab, 2, { strength: 10, maxRatio });
      const max = Math.max(...w);
      const min = Math.min(...w);
      expect(max / min).toBeLessThanOrEqual(maxRatio * (1 + 1e-5));
      expect(classMean(w, lab, 0)).toBeCloseTo(1, 5);
      expect(max).toBeLessThanOrEqual(maxRatio * (1 + 1e-5));
      expect(min).toBeGreaterThanOrEqual(1 / maxRatio / (1 + 1e-5));
    }
    const capped = boostingImageWeights(rowsOf(many), lab, 2, { strength: 10, maxRatio: 20 });
    expect(capped[0] / capped[1]).toBeCloseTo(20, 3); // exp(10 * 0.998) would be ~21 000
    const uncapped = boostingImageWeights(rowsOf(many), lab, 2, { strength: 10, maxRatio: Infinity });
    expect(uncapped[0] / uncapped[1]).toBeGreaterThan(1000);
    // the default strength 2 stays under the default cap 20 (ratio at most e^2)
    const dflt = boostingImageWeights(rowsOf(many), lab, 2);
    expect(dflt[0] / dflt[1]).toBeCloseTo(Math.exp(2 * 0.998), 2);
  });

  it('reads the stage-1 block of wider rows (two-stage outputs) and three classes', () => {
    // width 5: 3 classes then 2 other values that must be ignored
    const rows = Float32Array.from([0.8, 0.1, 0.1, 9, 9, 0.1, 0.1, 0.8, 9, 9, 0.1, 0.8, 0.1, 9, 9, 0.6, 0.2, 0.2, 9, 9]);
    const w = boostingImageWeights(rows, [0, 2, 2, 0], 3, { width: 5 });
    expect(w[2]).toBeGreaterThan(1); // class 2 given 0.1
    expect(w[1]).toBeLessThan(1); // class 2 given 0.8
    expect((w[1] + w[2]) / 2).toBeCloseTo(1, 5);
    expect((w[0] + w[3]) / 2).toBeCloseTo(1, 5);
    expect(w[0] / w[3]).toBeCloseTo(Math.exp(2 * 0.2) / Math.exp(2 * 0.4), 5);
  });

  it('refuses inconsistent inputs with a clear message', () => {
    const bad = (f: () => unknown, msg: RegExp) => {
      expect(f).toThrow(ValidationError);
      expect(f).toThrow(msg);
    };
    bad(() => boostingImageWeights(rowsOf([0.5]), [0, 1], 2), /2 images of 2 values need 4 probabilities, got 2/);
    bad(() => boostingImageWeights(rowsOf([0.5]), [2], 2), /label 2 of image 0 is not a class/);
    bad(() => boostingImageWeights(Float32Array.from([NaN, 1]), [0], 2), /probability NaN of image 0/);
    bad(() => boostingImageWeights(rowsOf([0.5]), [0], 2, { strength: -1 }), /strength/);
    bad(() => boostingImageWeights(rowsOf([0.5]), [0], 2, { maxRatio: 0.5 }), /maxRatio/);
    bad(() => boostingImageWeights(rowsOf([0.5]), [0], 2, { width: 1 }), /width/);
  });
});

describe('rowWeightsFromImages', () => {
  it('gives every tile row (grid tiles and views) its image\u2019s weight', () => {
    const imageOf = Int32Array.from([0, 0, 1, 1, 1, 2, 0, 2]);
    expect(Array.from(rowWeightsFromImages([0.5, 2, 1], { count: 8, imageOf }))).toEqual([0.5, 0.5, 2, 2, 2, 1, 0.5, 1]);
  });

  it('one row per image without imageOf; any explicit mapping (augmented copies)', () => {
    expect(Array.from(rowWeightsFromImages([0.5, 2], { count: 2 }))).toEqual([0.5, 2]);
    const copies = Int32Array.from({ length: 6 }, (_, r) => r % 2);
    expect(Array.from(rowWeightsFromImages([0.5, 2], { count: 6, imageOf: copies }))).toEqual([0.5, 2, 0.5, 2, 0.5, 2]);
  });

  it('refuses mappings that do not fit', () => {
    expect(() => rowWeightsFromImages([1, 2], { count: 3 })).toThrow(/2 image weights for 3 rows/);
    expect(() => rowWeightsFromImages([1, 2], { count: 2, imageOf: Int32Array.from([0]) })).toThrow(/imageOf has 1 entries for 2 rows/);
    expect(() => rowWeightsFromImages([1, 2], { count: 2, imageOf: Int32Array.from([0, 2]) })).toThrow(/row 1 belongs to image 2/);
  });
});
