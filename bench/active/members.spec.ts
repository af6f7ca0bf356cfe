import { memberDisagreement } from './members';

describe('bench:active ensemble members', () => {
  it('averages the members and scores their disagreement per image', () => {
    // Two images, two members: they agree on image 0 and disagree confidently on image 1.
    const a = Float32Array.from([0.9, 0.1, 0.99, 0.01]);
    const b = Float32Array.from([0.9, 0.1, 0.01, 0.99]);
    const r = memberDisagreement([a, b], { numClasses: 2 });
    [0.9, 0.1, 0.5, 0.5].forEach((x, j) => expect(r.probabilities[j]).toBeCloseTo(x, 6));
    expect(r.mutualInformation[0]).toBeCloseTo(0, 9);
    // H(0.5, 0.5) / log 2 = 1, minus the members' entropy H(0.99, 0.01) / log 2.
    const h = -(0.99 * Math.log(0.99) + 0.01 * Math.log(0.01)) / Math.log(2);
    expect(r.mutualInformation[1]).toBeCloseTo(1 - h, 5);
  });

  it('reads stage 1 of rows with subtype outputs', () => {
    const layout = { numClasses: 2, subtypeParents: [0, 1, 1] };
    const a = Float32Array.from([0.2, 0.8, 0.2, 0.5, 0.3]);
    const b = Float32Array.from([0.8, 0.2, 0.8, 0.1, 0.1]);
    const r = memberDisagreement([a, b, a], layout);
    expect(r.probabilities).toHaveLength(5);
    expect(r.probabilities[0]).toBeCloseTo(0.4, 6);
    expect(r.mutualInformation).toHaveLength(1);
    expect(r.mutualInformation[0]).toBeGreaterThan(0);
    expect(memberDisagreement([a], layout).mutualInformation[0]).toBeCloseTo(0, 9);
  });
});
