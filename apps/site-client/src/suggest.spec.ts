import { Candidate, marginScore, rankForLabelling, scores } from './suggest';
import { QUEUE_COLUMNS, folderPatient, formatQueueCsv } from './suggest-command';
import { parseCsv } from './csv';

/** A hand-made predictor output: P(malignant) = pm, entropy from it, optional extras. */
function cand(file: string, patient: string, pm: number, extra: Partial<Candidate['uncertainty']> = {}, features?: number[]): Candidate {
  const h = (p: number) => (p <= 0 || p >= 1 ? 0 : -(p * Math.log2(p) + (1 - p) * Math.log2(1 - p)));
  const cls = pm >= 0.5 ? 'malignant' : 'benign';
  return {
    file,
    patient,
    stage1: { class: cls, probability: Math.max(pm, 1 - pm), probabilities: { benign: 1 - pm, malignant: pm } },
    subtype: { class: cls === 'benign' ? 'F' : 'DC', probability: 0.7 },
    uncertainty: { entropy: h(pm), tiles: 12, tileDisagreement: 0.25, ...extra },
    ...(features ? { features: Float32Array.from(features) } : {}),
  };
}

describe('suggest: ranking unlabelled images', () => {
  it('ranks by entropy and by margin: the closest to a coin toss first', () => {
    const c = [cand('a', 'p1', 0.9), cand('b', 'p2', 0.52), cand('c', 'p3', 0.3), cand('d', 'p4', 0.99)];
    const r = rankForLabelling(c, { strategy: 'entropy', budget: 3 });
    expect(r.queue.map((q) => q.file)).toEqual(['b', 'c', 'a']);
    expect(r.queue[0]).toMatchObject({ rank: 1, patient: 'p2', suggestedClass: 'malignant', suggestedSubtype: 'DC', strategy: 'entropy' });
    expect(r.queue[0].why).toMatch(/^entropy 0\.999; P\(malignant\) 0\.520; 3 of 12 tiles disagree; image 1 of 1 of patient p2 queued \(cap 1\)$/);
    expect(marginScore({ benign: 0.3, malignant: 0.7 })).toBeCloseTo(0.6, 12);
    expect(rankForLabelling(c, { strategy: 'margin', budget: 4 }).queue.map((q) => q.file)).toEqual(['b', 'c', 'a', 'd']);
  });

  it('spreads the budget over patients: at most ceil(budget / patients) each, lifted only to fill the budget', () => {
    // Patient p1's images are all more uncertain than anyone else's.
    const c = [
      ...[0.5, 0.51, 0.52, 0.53, 0.54].map((p, i) => cand(`p1-${i}`, 'p1', p)),
      cand('p2-0', 'p2', 0.8),
      cand('p2-1', 'p2', 0.85),
      cand('p3-0', 'p3', 0.9),
    ];
    const r = rankForLabelling(c, { strategy: 'entropy', budget: 4 });
    expect(r.perPatientCap).toBe(2);
    expect(r.queue.map((q) => q.file)).toEqual(['p1-0', 'p1-1', 'p2-0', 'p2-1']);
    expect(r.capLifted).toBe(false);
    // Budget 7 over 3 patients: cap 3, and p3 has one image: the last pick lifts the cap.
    const big = rankForLabelling(c, { strategy: 'entropy', budget: 7 });
    expect(big.perPatientCap).toBe(3);
    expect(big.queue.map((q) => q.file)).toEqual(['p1-0', 'p1-1', 'p1-2', 'p2-0', 'p2-1', 'p3-0', 'p1-3']);
    expect(big.capLifted).toBe(true);
    expect(big.queue[6].why).toMatch(/over the per-patient cap/);
    // An explicit --per-patient is a hard cap: fewer images than the budget rather than more of one patient.
    const hard = rankForLabelling(c, { strategy: 'entropy', budget: 7, perPatient: 1 });
    expect(hard.queue.map((q) => q.file)).toEqual(['p1-0', 'p2-0', 'p3-0']);
  });

  it('bald and ensemble use MC dropout / member mutual information, and refuse a model that has none', () => {
    const c = [cand('a', 'p1', 0.5, { mcDropoutMutualInformation: 0.01, memberMutualInformation: 0.3 }), cand('b', 'p2', 0.9, { mcDropoutMutualInformation: 0.2, memberMutualInformation: 0.1 })];
    expect(rankForLabelling(c, { strategy: 'bald', budget: 2 }).queue.map((q) => q.file)).toEqual(['b', 'a']);
    expect(rankForLabelling(c, { strategy: 'ensemble', budget: 2 }).queue.map((q) => q.file)).toEqual(['a', 'b']);
    expect(() => scores('bald', [cand('x', 'p', 0.5)])).toThrow(/no dropout layer/);
    expect(() => scores('ensemble', [cand('x', 'p', 0.5)])).toThrow(/needs an ensemble/);
  });

  it('coreset: k-center greedy on the features, starting from the labelled images', () => {
    const c = [cand('near', 'p1', 0.5, {}, [0, 0]), cand('far', 'p2', 0.99, {}, [10, 0]), cand('mid', 'p3', 0.99, {}, [5, 5]), cand('twin', 'p4', 0.5, {}, [10, 0.1])];
    const r = rankForLabelling(c, { strategy: 'coreset', budget: 3, labelledFeatures: [Float32Array.from([0, 0])] });
    // twin (10.0005 from the labelled image), then mid (7.0007 from twin), then far (0.1 from twin) — never
    // near (0 from the labelled image), however uncertain it is.
    expect(r.queue.map((q) => q.file)).toEqual(['twin', 'mid', 'far']);
    expect(r.queue[0].score).toBeCloseTo(Math.hypot(10, 0.1), 5);
    expect(r.queue[1].score).toBeCloseTo(Math.hypot(5, 4.9), 5); // its nearest: twin
    expect(r.queue[2].score).toBeCloseTo(0.1, 5);
  });

  it('random: seeded, reproducible, and patient-capped too', () => {
    const c = Array.from({ length: 20 }, (_, i) => cand(`f${i}`, `p${i % 5}`, 0.5 + i / 50));
    const a = rankForLabelling(c, { strategy: 'random', budget: 10, seed: 3 }).queue.map((q) => q.file);
    expect(rankForLabelling(c, { strategy: 'random', budget: 10, seed: 3 }).queue.map((q) => q.file)).toEqual(a);
    expect(rankForLabelling(c, { strategy: 'random', budget: 10, seed: 4 }).queue.map((q) => q.file)).not.toEqual(a);
    const perPatient = new Map<string, number>();
    for (const f of a) perPatient.set(`p${Number(f.slice(1)) % 5}`, (perPatient.get(`p${Number(f.slice(1)) % 5}`) ?? 0) + 1);
    expect([...perPatient.values()].every((n) => n <= 2)).toBe(true);
  });

  it('writes the queue as CSV with empty label columns (quoted where needed), and derives patients from folders', () => {
    const r = rankForLabelling([cand('/u/a,b.png', 'folder:x', 0.5)], { strategy: 'entropy', budget: 1 });
    const rows = parseCsv(formatQueueCsv(r.queue));
    expect(rows[0].cells).toEqual([...QUEUE_COLUMNS]);
    expect(rows[1].cells[1]).toBe('/u/a,b.png');
    expect(rows[1].cells.slice(-2)).toEqual(['', '']);
    expect(rows[1].cells).toHaveLength(QUEUE_COLUMNS.length);
    expect(folderPatient('/u', '/u/case-7/slide 1/a.png')).toBe('folder:case-7/slide 1');
    expect(folderPatient('/u', '/u/a.png')).toBe('file:a.png');
    expect(() => rankForLabelling([], { strategy: 'entropy', budget: 0 })).toThrow(/--budget/);
  });
});
