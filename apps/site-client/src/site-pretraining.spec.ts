import * as tf from '@tensorflow/tfjs-core';
import { ModelSpec, WeightSet, maxAbsDifference } from '@histofed/fl-core';
import { buildModelAsync, contrastiveModelWeights, encoderHash, getWeights, mulberry32, selectBackend } from '@histofed/ml';
import type { BreakHisImage, ScaledImage, TileGeometry } from '@histofed/data';
import { TrainTask, roundConfigSchema } from '@histofed/protocol';
import { SiteLogger } from './site-logger';
import { PretrainingSource, checkStartingEncoder, pretrainingBatches, runLocalPretraining } from './site-pretraining';

const RUN = '0b7e5c1a-3d2f-4e6a-8b9c-1d2e3f4a5b6c';
const PRETRAIN_RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const SHA = 'a'.repeat(64);
const spec: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2, options: { width: 0.5, denseUnits: 8 } };

class CapturingLogger extends SiteLogger {
  readonly events: Record<string, unknown>[] = [];
  constructor() {
    super('site-test');
  }
  override event(_level: string, msg: string, fields: Record<string, unknown> = {}): void {
    this.events.push({ msg, ...fields });
  }
}

function task(config: Record<string, unknown>, kind: TrainTask['kind'] = 'round'): TrainTask {
  return {
    kind,
    modelHash: SHA,
    model: { sha256: SHA, totalBytes: 10, chunkBytes: 10, count: 1 },
    config: roundConfigSchema.parse({ runId: RUN, round: 1, model: spec, localEpochs: 2, batchSize: 3, learningRate: 0.01, proximalMu: 0, seed: 5, ...config }),
  };
}

/** n images of stripes of their own period and colour, w x h, decoded lazily; records what was asked. */
function source(n: number, w = 40, h = 30): PretrainingSource & { asked: TileGeometry[] } {
  const asked: TileGeometry[] = [];
  const images = Array.from({ length: n }, (_, i) => ({ path: `/site/img-${i}.png` }) as BreakHisImage);
  return {
    asked,
    trainCount: n - 2,
    pretrainingImages: () => images,
    scaledImage: async (image, geometry) => {
      asked.push(geometry);
      const i = images.indexOf(image);
      const rand = mulberry32(i + 1);
      const colour = [rand(), rand(), rand()];
      const pixels = new Float32Array(w * h * 3);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) pixels[(y * w + x) * 3 + c] = Math.floor((x + y * (i % 2)) / (2 + (i % 3))) % 2 ? colour[c] : 1 - colour[c];
      return { width: w, height: h, pixels } satisfies ScaledImage;
    },
  };
}

describe('contrastive pretraining at a site (issue 19)', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });

  it('trains the contrastive model on pairs of views of every image: the weights move, the loss is finite, no tensor is left', async () => {
    const global = contrastiveModelWeights(spec, 2, 8, 16);
    const logger = new CapturingLogger();
    const data = source(7);
    const stages: string[] = [];
    const before = tf.memory().numTensors;
    const t = task({ pretrain: { temperature: 0.5, projectionDim: 8, projectionHidden: 16, cropSize: 24, pairsPerImage: 2 } });
    const result = await runLocalPretraining(t, global, data, logger, (stage) => stages.push(stage));
    expect(tf.memory().numTensors).toBe(before);
    expect(result.weights.map((w) => w.name)).toEqual(global.map((w) => w.name));
    const moved = (name: string) => maxAbsDifference([result.weights.find((w) => w.name === name)!], [global.find((w) => w.name === name)!]);
    expect(moved('conv1/kernel')).toBeGreaterThan(0);
    expect(moved('proj2/kernel')).toBeGreaterThan(0);
    expect(Number.isFinite(result.metrics['loss'])).toBe(true);
    expect(result.metrics['loss']).toBeGreaterThan(0);
    expect(result.metrics).toEqual(expect.objectContaining({ images: 7, pairs: 2 * 2 * 7, firstEpochLoss: expect.any(Number) }));
    // FedAvg weighs the update by the training images the site announced (secure aggregation's weight scale counts them).
    expect(result.numSamples).toBe(5);
    // Each image is decoded once (kept within the budget), at native resolution for a whole-image model.
    expect(data.asked).toEqual(Array.from({ length: 7 }, () => ({ size: 24, scale: 1 })));
    expect(stages).toEqual(expect.arrayContaining(['preparing', 'training']));
    expect(logger.events.map((e) => e.msg)).toEqual(expect.arrayContaining(['pretraining started', 'pretraining progress', 'pretraining finished']));
    const started = logger.events.find((e) => e.msg === 'pretraining started')!;
    // 7 images in batches of 3: 3 + 4 (a batch of one joins the one before), twice per epoch.
    expect(started).toEqual(expect.objectContaining({ images: 7, batchesPerEpoch: 4, cropSize: 24, imageSize: 16 }));
  });

  it('decodes again what does not fit the memory budget, and refuses what it cannot train on', async () => {
    const global = contrastiveModelWeights(spec, 2, 8, 16);
    const pretrain = { temperature: 0.5, projectionDim: 8, projectionHidden: 16, cropSize: 16, pairsPerImage: 1 };
    const data = source(4);
    await runLocalPretraining(task({ pretrain, localEpochs: 2 }), global, data, new CapturingLogger(), undefined, 0);
    expect(data.asked.length).toBe(8);
    await expect(runLocalPretraining(task({ pretrain }), global, source(1), new CapturingLogger())).rejects.toThrow(/at least 2 images at the site .* it has 1/);
    await expect(runLocalPretraining(task({ pretrain, batchSize: 1 }), global, source(4), new CapturingLogger())).rejects.toThrow(/batchSize is 1/);
    await expect(runLocalPretraining(task({}), global, source(4), new CapturingLogger())).rejects.toThrow(/not a pretraining task/);
    // A global model of another layout (a classifier's) is refused by name.
    const classifier = await buildModelAsync(spec, 1);
    const wrong = getWeights(classifier);
    classifier.dispose();
    await expect(runLocalPretraining(task({ pretrain }), wrong, source(4), new CapturingLogger())).rejects.toThrow(/fc1|proj1/);
  });

  it('splits a pass into batches of distinct images, none of one', () => {
    expect(pretrainingBatches([0, 1, 2, 3, 4, 5, 6], 3)).toEqual([[0, 1, 2], [3, 4, 5, 6]]);
    expect(pretrainingBatches([0, 1, 2, 3], 2)).toEqual([[0, 1], [2, 3]]);
    expect(pretrainingBatches([0, 1], 8)).toEqual([[0, 1]]);
  });

  describe('a classification run that starts from a pretrained encoder', () => {
    let initial: WeightSet;
    let sha256: string;
    beforeAll(async () => {
      const model = await buildModelAsync(spec, 3);
      initial = getWeights(model);
      model.dispose();
      sha256 = encoderHash(spec, initial);
    });

    it("checks the first round's model against the encoder the run names", () => {
      expect(checkStartingEncoder(task({ startFrom: { run: PRETRAIN_RUN, sha256 } }), initial)).toEqual({ checked: true, sha256 });
      // Later rounds (the encoder trains on) and runs without startFrom are not checked.
      expect(checkStartingEncoder(task({ round: 2, startFrom: { run: PRETRAIN_RUN, sha256: 'f'.repeat(64) } }), initial)).toEqual({ checked: false });
      expect(checkStartingEncoder(task({}), initial)).toEqual({ checked: false });
    });

    it('refuses a model whose encoder has another hash, naming the run and both hashes', () => {
      const moved = initial.map((t) => (t.name === 'conv2/bias' ? { ...t, values: Float32Array.from(t.values, (v) => v + 0.01) } : t));
      const other = encoderHash(spec, moved);
      const t = task({ startFrom: { run: PRETRAIN_RUN, sha256 } });
      expect(() => checkStartingEncoder(t, moved)).toThrow(
        `run ${RUN} starts from the encoder of pretrain run ${PRETRAIN_RUN} with sha256 ${sha256}, but the encoder of the global model received has sha256 ${other}: refusing to train on it`,
      );
      // The heads are not the encoder: a model with other heads passes.
      const heads = initial.map((t) => (t.name === 'head/bias' ? { ...t, values: Float32Array.from(t.values, (v) => v + 1) } : t));
      expect(checkStartingEncoder(t, heads).checked).toBe(true);
    });
  });
});
