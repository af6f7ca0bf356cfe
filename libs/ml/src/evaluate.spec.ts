import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { evaluateModel, evaluateModelAsync, predictProbabilities, predictProbabilitiesAsync } from './evaluate';
import { classificationMetrics } from './metrics';
import { evaluationMetrics } from './metrics-extra';
import { buildModel } from './models';
import { brightDarkImages } from './testing/synthetic';

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
    expect(e.metrics).toEqual(evaluationMetrics(data.labels, e.probabilities, 3, data.groups));
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
