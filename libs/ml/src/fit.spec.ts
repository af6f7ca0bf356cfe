import type { LabeledImages, ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { evaluateModel } from './evaluate';
import { fit } from './fit';
import type { FitEpoch } from './fit';
import { buildModel } from './models';
import { brightDarkImages, twoStageImages } from './testing/synthetic';
import { getWeights, setWeights } from './weights-bridge';

const spec: ModelSpec = { kind: 'se-cnn', imageSize: 16, numClasses: 2, options: { dropout: 0 } };
const base = { batchSize: 16, learningRate: 0.01, proximalMu: 0, seed: 2 };

beforeAll(async () => {
  await selectBackend('wasm');
});

function initial(s: ModelSpec) {
  const m = buildModel(s, 1);
  const w = getWeights(m);
  m.dispose();
  return w;
}

describe('fit', () => {
  it('keeps the best weights on validation and stops after `patience` checks without improvement', async () => {
    const train = brightDarkImages(32, 16, 3);
    // Validation labels are the opposite of the rule being learned: the better training gets, the
    // worse validation looks, so the best check is an early one and training stops early.
    const flipped: LabeledImages = { ...brightDarkImages(16, 16, 4), labels: Int32Array.from(brightDarkImages(16, 16, 4).labels, (l) => 1 - l) };
    const epochs: FitEpoch[] = [];
    const r = await fit({ spec, initial: initial(spec) }, train, {
      ...base,
      maxEpochs: 30,
      patience: 2,
      validation: flipped,
      onEpoch: (e) => epochs.push(e),
    });
    expect(r.stoppedEarly).toBe(true);
    expect(r.epochsRun).toBe(r.bestEpoch + 2);
    expect(epochs).toEqual(r.history);
    expect(epochs.filter((e) => e.best).at(-1)?.epoch).toBe(r.bestEpoch);
    // The returned weights are the best check's: evaluating them reproduces its validation metrics.
    const m = buildModel(spec, 1);
    setWeights(m, r.weights);
    expect(evaluateModel(m, flipped).metrics['loss']).toBeCloseTo(r.validation?.['loss'] as number, 5);
    expect(r.validation).toEqual(r.history[r.bestEpoch - 1].validation);
    m.dispose();
  }, 120_000);

  it('trains a two-stage model until maxEpochs when validation keeps improving, monitoring balanced accuracy', async () => {
    const s: ModelSpec = { ...spec, subtypeParents: [0, 0, 1, 1] };
    const train = twoStageImages(32, 16, 5);
    const r = await fit({ spec: s, initial: initial(s) }, train, {
      ...base,
      maxEpochs: 4,
      epochsPerCheck: 2,
      monitor: 'balancedAccuracy',
      validation: twoStageImages(16, 16, 6),
    });
    expect(r.history.map((h) => h.epoch)).toEqual([2, 4]);
    expect(r.validation).toHaveProperty('stage2Accuracy');
  }, 120_000);

  it('neither stops nor keeps weights before minEpochs, and compares smoothed values', async () => {
    const train = brightDarkImages(32, 16, 3);
    // As above, the best raw validation value is an early epoch's: with minEpochs that epoch cannot win.
    const flipped: LabeledImages = { ...brightDarkImages(16, 16, 4), labels: Int32Array.from(brightDarkImages(16, 16, 4).labels, (l) => 1 - l) };
    const r = await fit({ spec, initial: initial(spec) }, train, { ...base, maxEpochs: 12, patience: 2, minEpochs: 5, smoothing: 0.5, validation: flipped });
    expect(r.bestEpoch).toBeGreaterThanOrEqual(5);
    expect(r.epochsRun).toBeGreaterThanOrEqual(5 + 2);
    expect(r.history.slice(0, 4).every((e) => !e.best)).toBe(true);
    await expect(fit({ spec, initial: initial(spec) }, train, { ...base, maxEpochs: 2, minEpochs: 0 })).rejects.toThrow('minEpochs');
    await expect(fit({ spec, initial: initial(spec) }, train, { ...base, maxEpochs: 2, smoothing: 1 })).rejects.toThrow('smoothing');
  }, 120_000);

  it('rejects bad options naming them', async () => {
    const train = brightDarkImages(8, 16, 3);
    await expect(fit({ spec, initial: initial(spec) }, train, { ...base, maxEpochs: 0 })).rejects.toThrow(ValidationError);
    await expect(fit({ spec, initial: initial(spec) }, train, { ...base, maxEpochs: 2, patience: 0 })).rejects.toThrow('patience');
  });
});
