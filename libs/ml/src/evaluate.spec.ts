import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { evaluateModel, evaluateModelAsync, predictProbabilities, predictProbabilitiesAsync } from './evaluate';
import { classificationMetrics } from './metrics';
import { evaluationMetrics } from './metrics-extra';
import { buildModel } from './models';
import { brightDarkImages, twoStageImages } from './testing/synthetic';
import { cascadeSubtypePredictions } from './stage-metrics';

const spec: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 3 };
const data = { ...brightDarkImages(10, 16, 2), labels: Int32Array.from([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]) };

beforeAll(async () => {
  await selectBackend('wasm');
});

describe('predictProbabilities', () => {
  it('returns count x numClasses softmax rows, independent of the batch size, without leaking tensors', () => {
    const m = buildModel(spec, 1);
    predictProbabilities(m, data.images, data.count, 16);
    const before = tf.memory().numTensors;
    const a = predictProbabilities(m, data.images, data.count, 16);
    const b = predictProbabilities(m, data.images, data.count, 16, 3);
    expect(tf.memory().numTensors).toBe(before);
    expect(a).toHaveLength(30);
    for (let i = 0; i < 30; i++) expect(b[i]).toBeCloseTo(a[i], 5);
    for (let i = 0; i < 10; i++) expect(a[i * 3] + a[i * 3 + 1] + a[i * 3 + 2]).toBeCloseTo(1, 5);
    // the same as one model.predict over everything (inference mode: dropout off)
    const full = tf.tidy(() => (m.predict(tf.tensor4d(data.images, [10, 16, 16, 3])) as tf.Tensor).dataSync());
    for (let i = 0; i < 30; i++) expect(a[i]).toBeCloseTo(full[i], 5);
    m.dispose();
  });

  it('has an async variant with the same result', async () => {
    const m = buildModel(spec, 1);
    const a = predictProbabilities(m, data.images, data.count, 16, 4);
    expect(await predictProbabilitiesAsync(m, data.images, data.count, 16, 4)).toEqual(a);
    m.dispose();
  });

  it('checks the image size and array length', () => {
    const m = buildModel(spec, 1);
    expect(() => predictProbabilities(m, data.images, data.count, 32)).toThrow(/model takes 16px images, got 32/);
    expect(() => predictProbabilities(m, data.images, 11, 16)).toThrow(/images: 11 images/);
    m.dispose();
  });
});

describe('evaluateModel', () => {
  it('returns the metrics of its probabilities, with patient accuracy when groups exist', async () => {
    const m = buildModel(spec, 1);
    const e = evaluateModel(m, data);
    expect(e.metrics).toEqual(expect.objectContaining(evaluationMetrics(data.labels, e.probabilities, 3, data.groups)));
    expect(e.report.stage1.imageAccuracy).toBe(e.metrics['accuracy']);
    expect(e.report.stage2).toBeUndefined();
    expect(e.metrics).toEqual(expect.objectContaining(classificationMetrics(data.labels, e.probabilities, 3, data.groups)));
    expect(e.metrics).toHaveProperty('patientAccuracy');
    // These test patients have images of both labels: no per-patient diagnosis.
    expect(Object.keys(e.metrics).sort()).toEqual(['accuracy', 'balancedAccuracy', 'ece', 'loss', 'macroF1', 'patientAccuracy', 'samples'].sort());
    const onePerPatient = { ...data, groups: Array.from(data.labels, (l) => `patient-of-class-${l}`) };
    expect(evaluateModel(m, onePerPatient).metrics).toHaveProperty('patientDiagnosisAccuracy');
    const noGroups = evaluateModel(m, { ...data, groups: undefined });
    expect(noGroups.metrics).not.toHaveProperty('patientAccuracy');
    expect(noGroups.metrics).not.toHaveProperty('patientDiagnosisAccuracy');
    expect((await evaluateModelAsync(m, data)).metrics).toEqual(e.metrics);
    m.dispose();
  });

  it('rejects labels outside the model classes', () => {
    const m = buildModel(spec, 1);
    expect(() => evaluateModel(m, { ...data, labels: data.labels.map((l) => l + 1) })).toThrow(/data.labels\[2\]: 3/);
    m.dispose();
  });
});

describe('evaluateModel on a two-stage model', () => {
  const twoStage: ModelSpec = { kind: 'se-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1] };
  const d = { ...twoStageImages(12, 16, 4), magnifications: [40, 100, 40, 100, 40, 100, 40, 100, 40, 100, 40, 100] };

  it('reports stage 1 from the first columns and stage 2 from the cascade, overall and per magnification', () => {
    const m = buildModel(twoStage, 1);
    const e = evaluateModel(m, d, { subtypeParents: twoStage.subtypeParents });
    expect(e.probabilities).toHaveLength(12 * 6);
    const stage1 = new Float32Array(24);
    for (let i = 0; i < 12; i++) stage1.set(e.probabilities.subarray(i * 6, i * 6 + 2), i * 2);
    expect(e.metrics).toEqual(expect.objectContaining(evaluationMetrics(d.labels, stage1, 2, d.groups)));
    const cascade = cascadeSubtypePredictions(e.probabilities, 2, [0, 0, 1, 1]);
    const right = Array.from(cascade).filter((c, i) => c === (d.subtypes as Int32Array)[i]).length;
    expect(e.metrics['stage2Accuracy']).toBeCloseTo(right / 12, 10);
    expect(e.report.stage2?.confusion).toHaveLength(4);
    expect(Object.keys(e.report.byMagnification ?? {})).toEqual(['40', '100']);
    expect(e.report.byMagnification?.['40'].images).toBe(6);
    m.dispose();
  });

  it('needs the subtype parents of a two-stage model, and refuses them for a single-stage one', () => {
    const m = buildModel(twoStage, 1);
    expect(() => evaluateModel(m, d)).toThrow(/subtypeParents: the model has a subtype head of 4 classes/);
    m.dispose();
    const single = buildModel({ ...twoStage, subtypeParents: undefined }, 1);
    expect(() => evaluateModel(single, d, { subtypeParents: [0, 1] })).toThrow(/no subtype head/);
    single.dispose();
  });
});

describe('evaluation of tiles', () => {
  const head: ModelSpec = {
    kind: 'backbone-head',
    imageSize: 32,
    numClasses: 2,
    backbone: { name: 'mobilenet-v2-imagenet', cut: 'x', input: 'signed', features: 4 },
    tiles: { scale: 1, views: 0 },
  };

  it('averages the tile rows of each image, then reports per image and per patient', () => {
    const m = buildModel(head, 1);
    // 3 images of 2, 3 and 1 tiles (rows of 4 features), rows of one image not contiguous.
    const imageOf = Int32Array.from([0, 1, 0, 1, 2, 1]);
    const rows = Float32Array.from({ length: 6 * 4 }, (_, i) => Math.sin(i) + 1);
    const data = {
      images: rows,
      count: 6,
      imageSize: 32,
      sampleShape: [4],
      imageOf,
      labels: Int32Array.from(imageOf, (i) => [0, 1, 1][i]),
      groups: Array.from(imageOf, (i) => ['p1', 'p2', 'p2'][i]),
    };
    const perRow = predictProbabilities(m, rows, 6, [4]);
    const e = evaluateModel(m, data);
    expect(e.probabilities).toHaveLength(3 * 2);
    const members: [number, number[]][] = [[0, [0, 2]], [1, [1, 3, 5]], [2, [4]]];
    for (const [image, rowsOf] of members) {
      for (let k = 0; k < 2; k++) {
        const mean = rowsOf.reduce((s, r) => s + perRow[r * 2 + k], 0) / rowsOf.length;
        expect(e.probabilities[image * 2 + k]).toBeCloseTo(mean, 6);
      }
    }
    expect(e.report.images).toBe(3);
    expect(e.report.patients).toBe(2);
    expect(() => evaluateModel(m, { ...data, imageOf: Int32Array.from([0, 1, 0, 1, 3, 1]) })).toThrow(/image 2 has no row/);
    expect(() => predictProbabilities(m, rows, 6, [5])).toThrow(/rows of 4/);
    m.dispose();
  });
});
