import { ValidationError } from '@histofed/fl-core';
import { evaluationMetrics } from './metrics-extra';
import {
  cascadeConfidences,
  cascadeSubtypePredictions,
  stagedEvaluation,
  stagedMetricsSummary,
  type StagedEvaluationInput,
} from './stage-metrics';

const f32 = (rows: number[][]) => Float32Array.from(rows.flat());
const i32 = (xs: number[]) => Int32Array.from(xs);

/** BreakHis: A, F, PT, TA benign (0); DC, LC, MC, PC malignant (1). */
const PARENTS = [0, 0, 0, 0, 1, 1, 1, 1];

/*
 * Six images of three patients, two magnifications. Columns: benign, malignant | A F PT TA DC LC MC PC.
 *
 * img patient mag label subtype  stage-1 (b, m)  stage-1 pred  cascade                                 global subtype arg-max
 *  0   P1     40   0    F(1)     .9  .1           0 ok          benign: F .5 of .8        -> F(1) ok    F
 *  1   P1    100   0    F(1)     .4  .6           1 wrong       malignant: DC .25 of .6   -> DC(4) x    F (other class)
 *  2   P2     40   1    DC(4)    .3  .7           1 ok          malignant: DC .6 of .9    -> DC(4) ok   DC
 *  3   P2    100   1    DC(4)    .2  .8           1 ok          malignant: LC .2 of .45   -> LC(5) x    A (other class)
 *  4   P3     40   1    MC(6)    .6  .4           0 wrong       benign: PT .15 of .4      -> PT(2) x    MC (right, other class)
 *  5   P3    100   1    MC(6)    .45 .55          1 ok          malignant: MC .5 of .8    -> MC(6) ok   MC
 */
const probabilities = f32([
  [0.9, 0.1, 0.1, 0.5, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05],
  [0.4, 0.6, 0.05, 0.3, 0.05, 0.0, 0.25, 0.1, 0.15, 0.1],
  [0.3, 0.7, 0.02, 0.02, 0.02, 0.04, 0.6, 0.1, 0.1, 0.1],
  [0.2, 0.8, 0.4, 0.05, 0.05, 0.05, 0.15, 0.2, 0.05, 0.05],
  [0.6, 0.4, 0.1, 0.1, 0.15, 0.05, 0.1, 0.1, 0.3, 0.1],
  [0.45, 0.55, 0.05, 0.05, 0.05, 0.05, 0.1, 0.1, 0.5, 0.1],
]);
const input: StagedEvaluationInput = {
  labels: i32([0, 0, 1, 1, 1, 1]),
  subtypes: i32([1, 1, 4, 4, 6, 6]),
  probabilities,
  numClasses: 2,
  subtypeParents: PARENTS,
  patients: ['P1', 'P1', 'P2', 'P2', 'P3', 'P3'],
  magnifications: [40, 100, 40, 100, 40, 100],
};

describe('cascadeSubtypePredictions', () => {
  it('picks the class by stage 1, then the subtype within that class only', () => {
    // rows 1, 3 and 4 have their global subtype arg-max in the other class than the stage-1 arg-max
    expect(Array.from(cascadeSubtypePredictions(probabilities, 2, PARENTS))).toEqual([1, 4, 4, 5, 2, 6]);
  });

  it('breaks ties at both steps towards the lowest index', () => {
    const p = f32([
      [0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15, 0.15, 0.15], // class tie -> benign; A..TA tie -> A
      [0.1, 0.9, 0.3, 0.3, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1], // malignant, all tied -> DC
      [0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.2, 0.3, 0.3, 0.2], // LC and MC tied -> LC
    ]);
    expect(Array.from(cascadeSubtypePredictions(p, 2, PARENTS))).toEqual([0, 4, 5]);
  });

  it('works with interleaved parents', () => {
    // subtypes 0 and 2 are class 0, 1 and 3 class 1
    const p = f32([[0.3, 0.7, 0.4, 0.1, 0.3, 0.2]]);
    expect(Array.from(cascadeSubtypePredictions(p, 2, [0, 1, 0, 1]))).toEqual([3]);
  });

  it('validates its inputs', () => {
    expect(() => cascadeSubtypePredictions(probabilities.subarray(1), 2, PARENTS)).toThrow(/probabilities/);
    expect(() => cascadeSubtypePredictions(probabilities, 2, [0, 0, 0, 0, 0, 0, 0, 0])).toThrow(
      /subtypeParents: class 1 has no subtype/,
    );
    expect(() => cascadeSubtypePredictions(probabilities, 2, [0, 0, 0, 0, 1, 1, 1, 2])).toThrow(/subtypeParents\[7\]/);
    expect(() => cascadeSubtypePredictions(probabilities, 1, PARENTS)).toThrow(/numClasses/);
  });
});

describe('cascadeConfidences', () => {
  it('holds P(class) x P(subtype | class) at the cascade subtype, 0 elsewhere', () => {
    const c = cascadeConfidences(probabilities, 2, PARENTS);
    // row 1: .6 x .25 / (.25 + .1 + .15 + .1) = .25 at DC
    expect(Array.from(c.subarray(8, 16)).map((x) => Number(x.toFixed(6)))).toEqual([0, 0, 0, 0, 0.25, 0, 0, 0]);
    // row 4: .6 x .15 / (.1 + .1 + .15 + .05) = .225 at PT
    expect(c[4 * 8 + 2]).toBeCloseTo(0.225, 6);
  });
});

describe('stagedEvaluation', () => {
  const report = stagedEvaluation(input);

  it('counts images and patients', () => {
    expect(report.images).toBe(6);
    expect(report.patients).toBe(3);
  });

  it('computes the stage-1 metrics by hand', () => {
    const s1 = report.stage1;
    // predictions 0 1 1 1 0 1 vs labels 0 0 1 1 1 1: images 0, 2, 3, 5 right
    expect(s1.imageAccuracy).toBeCloseTo(4 / 6, 10);
    expect(s1.confusion).toEqual([
      [1, 1],
      [1, 3],
    ]);
    // recall benign 1/2, malignant 3/4
    expect(s1.balancedAccuracy).toBeCloseTo(0.625, 10);
    // P1 1/2, P2 2/2, P3 1/2
    expect(s1.patientAccuracy).toBeCloseTo(2 / 3, 10);
    // votes: P1 1-1, tie -> mean benign (.9+.4)/2 = .65 > .35 -> benign, right;
    // P2 0-2 -> malignant, right; P3 1-1, tie -> mean benign (.6+.45)/2 = .525 > .475 -> benign, wrong
    expect(s1.patientDiagnosisAccuracy).toBeCloseTo(2 / 3, 10);
    // malignant scores .7 .8 .4 .55 vs benign .1 .6: all 4 beat .1, only .7 and .8 beat .6 -> 6/8
    expect(s1.auc).toBeCloseTo(0.75, 10);
    // benign tp 1, support 2, predicted 2 -> F1 .5; malignant tp 3, support 4, predicted 4 -> F1 .75
    expect(s1.f1).toBeCloseTo(0.75, 10);
    expect(s1.macroF1).toBeCloseTo(0.625, 10);
    expect(s1.perClass[0]).toEqual({ support: 2, predicted: 2, precision: 0.5, recall: 0.5, f1: 0.5 });
    expect(s1.perClass[1]).toEqual({ support: 4, predicted: 4, precision: 0.75, recall: 0.75, f1: 0.75 });
  });

  it('computes the stage-1 ECE by hand and agrees with evaluationMetrics on the stage-1 columns', () => {
    // confidence (right?) -> bin: .9 y (.8,.9]; .6 n, .6 n, .55 y (.5,.6]; .7 y (.6,.7]; .8 y (.7,.8]
    // (.1 + |1 - 1.75| + .3 + .2) / 6 = 1.35 / 6
    expect(report.ece).toBeCloseTo(0.225, 6);
    const stage1Columns = f32(Array.from({ length: 6 }, (_, i) => Array.from(probabilities.subarray(i * 10, i * 10 + 2))));
    const m = evaluationMetrics(input.labels, stage1Columns, 2, input.patients);
    expect(report.ece).toBeCloseTo(m['ece'], 10);
    expect(report.stage1.auc).toBeCloseTo(m['auc'], 10);
    expect(report.stage1.patientDiagnosisAccuracy).toBeCloseTo(m['patientDiagnosisAccuracy'], 10);
  });

  it('scores the cascade prediction against the true subtype over all images', () => {
    const s2 = report.stage2;
    expect(s2).toBeDefined();
    if (s2 === undefined) return;
    // cascade 1 4 4 5 2 6 vs subtypes 1 1 4 4 6 6: images 0, 2, 5 right (image 1, a stage-1 error, is wrong)
    expect(s2.imageAccuracy).toBeCloseTo(0.5, 10);
    const confusion = Array.from({ length: 8 }, () => new Array<number>(8).fill(0));
    confusion[1][1] = 1;
    confusion[1][4] = 1;
    confusion[4][4] = 1;
    confusion[4][5] = 1;
    confusion[6][2] = 1;
    confusion[6][6] = 1;
    expect(s2.confusion).toEqual(confusion);
    // F: tp1 sup2 pred1 -> 2/3; PT: sup0 pred1 -> 0; DC: tp1 sup2 pred2 -> .5; LC: sup0 pred1 -> 0;
    // MC: tp1 sup2 pred1 -> 2/3; A, TA, PC occur nowhere and are left out: (2/3 + 0 + .5 + 0 + 2/3) / 5
    expect(s2.macroF1).toBeCloseTo(11 / 30, 10);
    expect(s2.perClass[0]).toEqual({ support: 0, predicted: 0, precision: null, recall: null, f1: null });
    expect(s2.perClass[1]).toEqual({ support: 2, predicted: 1, precision: 1, recall: 0.5, f1: 2 / 3 });
    expect(s2.perClass[2]).toEqual({ support: 0, predicted: 1, precision: 0, recall: null, f1: 0 });
    expect(s2.perClass[4]).toEqual({ support: 2, predicted: 2, precision: 0.5, recall: 0.5, f1: 0.5 });
    // recall F .5, DC .5, MC .5 (the only subtypes present)
    expect(s2.balancedAccuracy).toBeCloseTo(0.5, 10);
    // each patient has one of two images right
    expect(s2.patientAccuracy).toBeCloseTo(0.5, 10);
    // votes 1-1 everywhere; ties go to the larger summed cascade confidence:
    // P1 F .9*.5/.8 = .5625 > DC .25 -> F right; P2 DC .7*.6/.9 = .4667 > LC .8*.2/.45 = .3556 -> DC right;
    // P3 MC .55*.5/.8 = .34375 > PT .225 -> MC right (the lowest index, PT, would be wrong)
    expect(s2.patientDiagnosisAccuracy).toBeCloseTo(1, 10);
    // cascade confidence (right?) -> bin: .25 n, .225 n (.2,.3]; .3556 n, .34375 y (.3,.4]; .4667 y (.4,.5]; .5625 y (.5,.6]
    // (.475 + |1 - .699306| + .533333 + .4375) / 6
    const ece = (0.475 + (1 - (0.16 / 0.45 + 0.34375)) + (1 - 0.42 / 0.9) + 0.4375) / 6;
    expect(ece).toBeCloseTo(0.291088, 6);
    expect(s2.ece).toBeCloseTo(ece, 5);
  });

  it('splits by magnification, keys in numeric order', () => {
    const by = report.byMagnification;
    expect(by).toBeDefined();
    if (by === undefined) return;
    expect(Object.keys(by)).toEqual(['40', '100']);
    const x40 = by['40'];
    const x100 = by['100'];
    expect(x40.images).toBe(3);
    expect(x40.patients).toBe(3);
    // 40x: images 0 2 4, labels 0 1 1, predicted 0 1 0
    expect(x40.stage1.imageAccuracy).toBeCloseTo(2 / 3, 10);
    expect(x40.stage1.balancedAccuracy).toBeCloseTo((1 + 0.5) / 2, 10);
    expect(x40.stage1.patientAccuracy).toBeCloseTo(2 / 3, 10);
    expect(x40.stage1.auc).toBeCloseTo(1, 10); // .7 and .4 both beat .1
    expect(x40.stage1.f1).toBeCloseTo(2 / 3, 10); // tp 1, support 2, predicted 1
    // cascade 1 4 2 vs 1 4 6
    expect(x40.stage2?.imageAccuracy).toBeCloseTo(2 / 3, 10);
    // 100x: images 1 3 5, labels 0 1 1, predicted 1 1 1
    expect(x100.stage1.imageAccuracy).toBeCloseTo(2 / 3, 10);
    expect(x100.stage1.balancedAccuracy).toBeCloseTo(0.5, 10);
    expect(x100.stage1.auc).toBeCloseTo(0.5, 10); // .8 beats .6, .55 does not
    // cascade 4 5 6 vs 1 4 6
    expect(x100.stage2?.imageAccuracy).toBeCloseTo(1 / 3, 10);
    expect(x100.stage2?.confusion[1][4]).toBe(1);
    // ECE of one image group: 100x stage 1: .6 n, .8 y, .55 y -> bins (.5,.6] and (.7,.8]: (|1 - 1.15| + .2) / 3
    expect(x100.ece).toBeCloseTo(0.35 / 3, 6);
  });

  it('is JSON-safe: no NaN anywhere', () => {
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it('gives null for an AUC and an F1 that are undefined, and for missing patients', () => {
    const r = stagedEvaluation({
      labels: i32([0, 0]),
      probabilities: f32([
        [0.8, 0.2],
        [0.7, 0.3],
      ]),
      numClasses: 2,
      magnifications: ['200', '200'],
    });
    expect(r.stage1.auc).toBeNull();
    expect(r.stage1.f1).toBeNull(); // malignant neither in labels nor predictions
    expect(r.stage1.patientAccuracy).toBeNull();
    expect(r.stage1.patientDiagnosisAccuracy).toBeNull();
    expect(r.patients).toBeNull();
    expect(r.stage2).toBeUndefined();
    expect(r.byMagnification?.['200'].stage1.auc).toBeNull();
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it('gives null for an AUC in a magnification where one class occurs', () => {
    const r = stagedEvaluation({ ...input, magnifications: [40, 40, 40, 40, 400, 400] });
    expect(r.byMagnification?.['400'].stage1.auc).toBeNull(); // images 4, 5: both malignant
    expect(r.byMagnification?.['400'].stage1.balancedAccuracy).toBeCloseTo(0.5, 10);
    expect(r.byMagnification?.['40'].stage1.auc).not.toBeNull();
  });

  it('has no stage 2 for a single-stage model or without subtypes', () => {
    const single = stagedEvaluation({
      labels: input.labels,
      subtypes: input.subtypes, // ignored: there are no subtype columns
      probabilities: f32(Array.from({ length: 6 }, (_, i) => Array.from(probabilities.subarray(i * 10, i * 10 + 2)))),
      numClasses: 2,
      patients: input.patients,
    });
    expect(single.stage2).toBeUndefined();
    expect(single.byMagnification).toBeUndefined();
    expect(single.stage1).toEqual(report.stage1);
    expect(single.ece).toBeCloseTo(report.ece, 10);
    const noSubtypes = stagedEvaluation({ ...input, subtypes: undefined });
    expect(noSubtypes.stage2).toBeUndefined();
    expect(noSubtypes.stage1).toEqual(report.stage1);
  });

  it('gives a null stage-2 diagnosis when a patient has two true subtypes (slide 14-13412)', () => {
    // image 3 filed under LC instead of DC: patient P2 has DC and LC images
    const r = stagedEvaluation({ ...input, subtypes: i32([1, 1, 4, 5, 6, 6]) });
    expect(r.stage2?.patientDiagnosisAccuracy).toBeNull();
    expect(r.stage1.patientDiagnosisAccuracy).toBeCloseTo(2 / 3, 10);
    // image 3's LC prediction is now right: P1 1/2, P2 2/2, P3 1/2
    expect(r.stage2?.patientAccuracy).toBeCloseTo(2 / 3, 10);
    expect(r.stage2?.imageAccuracy).toBeCloseTo(4 / 6, 10);
  });

  it('validates its inputs, naming the field and the first offending image', () => {
    const bad = (patch: Partial<StagedEvaluationInput>) => () => stagedEvaluation({ ...input, ...patch });
    expect(bad({ labels: i32([]), probabilities: new Float32Array(0), subtypes: i32([]), patients: [], magnifications: [] })).toThrow(
      /labels: there are no samples/,
    );
    expect(bad({ probabilities: probabilities.subarray(0, 58) })).toThrow(/probabilities: 6 images x 10 columns need 60/);
    const nan = probabilities.slice();
    nan[23] = NaN;
    expect(bad({ probabilities: nan })).toThrow(/probabilities\[23\]: image 2, column 3/);
    const big = probabilities.slice();
    big[50] = 1.5;
    expect(bad({ probabilities: big })).toThrow(/image 5, column 0/);
    expect(bad({ labels: i32([0, 0, 2, 1, 1, 1]) })).toThrow(/labels\[2\]/);
    expect(bad({ subtypes: i32([1, 1, 4, 1, 1, 6]) })).toThrow(/subtypes\[3\]: subtype 1 belongs to class 0, but labels\[3\] is 1/);
    expect(bad({ subtypes: i32([1, 1, 4, 4, 8, 6]) })).toThrow(/subtypes\[4\]/);
    expect(bad({ subtypes: i32([1, 1, 4]) })).toThrow(/subtypes: expected 6/);
    expect(bad({ patients: ['P1'] })).toThrow(/patients: expected 6/);
    expect(bad({ magnifications: [40] })).toThrow(/magnifications: expected 6/);
    expect(bad({ subtypeParents: [0, 0, 0, 0, 0, 0, 0, 0] })).toThrow(/subtypeParents: class 1 has no subtype/);
    expect(bad({ numClasses: 1 })).toThrow(ValidationError);
    expect(bad({ subtypeParents: [0, 1, 1, 1, 1, 1, 1, 1, 1] })).toThrow(/probabilities/);
  });
});

describe('stagedMetricsSummary', () => {
  it('flattens the stage-1 and stage-2 headline numbers', () => {
    const s = stagedMetricsSummary(stagedEvaluation(input));
    expect(Object.keys(s).sort()).toEqual(
      [
        'accuracy',
        'auc',
        'balancedAccuracy',
        'ece',
        'f1',
        'macroF1',
        'patientAccuracy',
        'patientDiagnosisAccuracy',
        'stage2Accuracy',
        'stage2BalancedAccuracy',
        'stage2MacroF1',
        'stage2PatientAccuracy',
      ].sort(),
    );
    expect(s['accuracy']).toBeCloseTo(4 / 6, 10);
    expect(s['auc']).toBeCloseTo(0.75, 10);
    expect(s['f1']).toBeCloseTo(0.75, 10);
    expect(s['ece']).toBeCloseTo(0.225, 6);
    expect(s['stage2Accuracy']).toBeCloseTo(0.5, 10);
    expect(s['stage2MacroF1']).toBeCloseTo(11 / 30, 10);
    expect(s['stage2BalancedAccuracy']).toBeCloseTo(0.5, 10);
    expect(s['stage2PatientAccuracy']).toBeCloseTo(0.5, 10);
  });

  it('leaves out null values and the stage-2 keys of a single-stage report', () => {
    const s = stagedMetricsSummary(
      stagedEvaluation({ labels: i32([1, 1]), probabilities: f32([[0.2, 0.8], [0.6, 0.4]]), numClasses: 2 }),
    );
    expect(Object.keys(s).sort()).toEqual(['accuracy', 'balancedAccuracy', 'ece', 'f1', 'macroF1']);
    expect(s['accuracy']).toBe(0.5);
    expect(s['f1']).toBeCloseTo(2 / 3, 10);
  });
});
