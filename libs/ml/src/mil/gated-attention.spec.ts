import * as tf from '@tensorflow/tfjs-core';
import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError, WeightLayoutError } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { mulberry32 } from '../random';
import { bagsFromRows, type TileBags } from './bags';
import {
  createMil,
  disposeMil,
  getMilWeights,
  milConfigForSpec,
  milForward,
  milLayout,
  predictMil,
  setMilWeights,
  trainMil,
  type MilConfig,
} from './gated-attention';

beforeAll(async () => {
  await selectBackend('cpu');
});

const DIM = 8;

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/**
 * `n` bags of 3..8 noise tiles (N(0, 1) features); a positive bag (every other one) has one signal
 * tile at a random position: a fixed pattern plus a little noise. Returns the tile rows and, per
 * bag, the index of its signal tile within the bag (-1 for a negative bag).
 */
function signalBags(n: number, seed: number, subtypes = false): { data: LabeledImages; signalAt: number[] } {
  const rand = mulberry32(seed);
  const pattern = [2, 2, -2, -2, 2, -2, 2, -2];
  const values: number[] = [];
  const imageOf: number[] = [];
  const labels: number[] = [];
  const subtype: number[] = [];
  const signalAt: number[] = [];
  for (let b = 0; b < n; b++) {
    const tiles = 3 + Math.floor(rand() * 6);
    const positive = b % 2 === 1;
    const at = positive ? Math.floor(rand() * tiles) : -1;
    // Subtypes (two-stage data): the sign of the first noise feature of tile 0 splits each class.
    let sub = 0;
    for (let t = 0; t < tiles; t++) {
      const row = Array.from({ length: DIM }, (_, j) => (t === at ? pattern[j] + 0.3 * gaussian(rand) : gaussian(rand)));
      if (t === 0) sub = row[0] > 0 ? 1 : 0;
      values.push(...row);
      imageOf.push(b);
      labels.push(positive ? 1 : 0);
    }
    subtype.push((positive ? 2 : 0) + sub);
    signalAt.push(at);
  }
  const perRow = imageOf.map((b) => subtype[b]);
  return {
    data: {
      images: Float32Array.from(values),
      labels: Int32Array.from(labels),
      count: imageOf.length,
      imageSize: 224,
      sampleShape: [DIM],
      imageOf: Int32Array.from(imageOf),
      ...(subtypes ? { subtypes: Int32Array.from(perRow) } : {}),
    },
    signalAt,
  };
}

const config: MilConfig = { dim: DIM, attentionUnits: 16, hiddenUnits: 16, numClasses: 2, subtypes: 0, dropout: 0 };

function forwardArrays(params: ReturnType<typeof createMil>, bags: TileBags): { probs: number[][]; attention: number[][] } {
  const out = tf.tidy(() =>
    milForward(params, tf.tensor3d(bags.features, [bags.count, bags.maxTiles, bags.dim]), tf.tensor2d(bags.mask, [bags.count, bags.maxTiles])),
  );
  const result = { probs: out.probabilities.arraySync(), attention: out.attention.arraySync() };
  out.probabilities.dispose();
  out.attention.dispose();
  return result;
}

describe('milForward', () => {
  it('gives attention summing to 1 over each bag, exactly 0 on padded tiles, and padding does not change a bag', () => {
    const { data } = signalBags(7, 3);
    const bags = bagsFromRows(data);
    expect(new Set(bags.tileCounts).size).toBeGreaterThan(1); // bags of unequal size
    const params = createMil(config, 5);
    const { probs, attention } = forwardArrays(params, bags);
    for (let b = 0; b < bags.count; b++) {
      const a = attention[b];
      expect(a).toHaveLength(bags.maxTiles);
      expect(a.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 5);
      for (let t = 0; t < bags.maxTiles; t++) {
        if (t < bags.tileCounts[b]) expect(a[t]).toBeGreaterThan(0);
        else expect(a[t]).toBe(0);
      }
      expect(probs[b][0] + probs[b][1]).toBeCloseTo(1, 5);
    }
    // The smallest bag alone (no padding) gives the same outputs as in the padded batch.
    const small = bags.tileCounts.indexOf(Math.min(...bags.tileCounts));
    const n = bags.tileCounts[small];
    const alone = tf.tidy(() => {
      const x = tf.tensor3d(bags.features.slice(small * bags.maxTiles * DIM, (small * bags.maxTiles + n) * DIM), [1, n, DIM]);
      const out = milForward(params, x, tf.ones([1, n]) as tf.Tensor2D);
      return [out.probabilities.arraySync()[0], out.attention.arraySync()[0]];
    });
    alone[0].forEach((p, k) => expect(p).toBeCloseTo(probs[small][k], 5));
    alone[1].forEach((p, t) => expect(p).toBeCloseTo(attention[small][t], 5));
    disposeMil(params);
  });

  it('keeps padded tiles at 0 when their features would dominate the scores', () => {
    const params = createMil({ ...config, hiddenUnits: 0 }, 2);
    const x = tf.tensor3d([1, 0, 0, 0, 0, 0, 0, 0, 1e4, 1e4, 1e4, 1e4, 1e4, 1e4, 1e4, 1e4], [1, 2, DIM]);
    const m = tf.tensor2d([1, 0], [1, 2]);
    const out = milForward(params, x, m);
    expect(Array.from(out.attention.dataSync())).toEqual([1, 0]);
    tf.dispose([x, m, out.probabilities, out.attention]);
    disposeMil(params);
  });

  it('lays a two-stage output out as the stage-1 softmax, then the subtype softmax', () => {
    const { data } = signalBags(5, 4, true);
    const bags = bagsFromRows(data);
    const params = createMil(milConfigForSpec({ numClasses: 2, subtypeParents: [0, 0, 1, 1] }, DIM, { attentionUnits: 8 }), 1);
    expect(params.config).toMatchObject({ numClasses: 2, subtypes: 4, hiddenUnits: 0, dropout: 0.25 });
    const { probs } = forwardArrays(params, bags);
    for (const row of probs) {
      expect(row).toHaveLength(6);
      expect(row[0] + row[1]).toBeCloseTo(1, 5);
      expect(row.slice(2).reduce((s, x) => s + x, 0)).toBeCloseTo(1, 5);
    }
    disposeMil(params);
  });

  it('refuses features of another width', () => {
    const params = createMil(config, 1);
    const x = tf.zeros([1, 2, DIM + 1]) as tf.Tensor3D;
    const m = tf.ones([1, 2]) as tf.Tensor2D;
    expect(() => milForward(params, x, m)).toThrow(ValidationError);
    tf.dispose([x, m]);
    disposeMil(params);
  });
});

describe('trainMil', () => {
  it('learns a bag label decided by one tile and puts the attention of positive bags on that tile', async () => {
    const train = signalBags(160, 11);
    const test = signalBags(80, 12);
    const trainBags = bagsFromRows(train.data);
    const testBags = bagsFromRows(test.data);
    const params = createMil(config, 7);
    const first = await trainMil(params, trainBags, { epochs: 1, batchSize: 16, learningRate: 0.01, seed: 1 });
    const result = await trainMil(params, trainBags, { epochs: 25, batchSize: 16, learningRate: 0.01, seed: 2 });
    expect(result.samples).toBe(160);
    expect(result.epochs).toBe(25);
    expect(result.loss).toBeLessThan(first.loss / 4);

    const { probabilities, attention, width } = predictMil(params, testBags, 32);
    expect(width).toBe(2);
    let correct = 0;
    let onSignal = 0;
    let positives = 0;
    for (let b = 0; b < testBags.count; b++) {
      if ((probabilities[b * 2 + 1] > probabilities[b * 2] ? 1 : 0) === testBags.labels[b]) correct++;
      const a = Array.from(attention.subarray(b * testBags.maxTiles, (b + 1) * testBags.maxTiles));
      expect(a.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 5);
      const at = test.signalAt[b];
      if (at < 0) continue;
      positives++;
      if (a.indexOf(Math.max(...a)) === at) onSignal++;
    }
    expect(correct / testBags.count).toBeGreaterThanOrEqual(0.95);
    expect(onSignal).toBe(positives);
    disposeMil(params);
  }, 60_000);

  it('trains a two-stage head on bags with subtypes', async () => {
    const bags = bagsFromRows(signalBags(40, 21, true).data);
    const params = createMil({ ...config, subtypes: 4, dropout: 0.2 }, 3);
    const first = await trainMil(params, bags, { epochs: 1, batchSize: 8, learningRate: 0.01, seed: 1 });
    const later = await trainMil(params, bags, { epochs: 10, batchSize: 8, learningRate: 0.01, seed: 1, subtypeWeights: [1, 1, 1, 1] });
    expect(Number.isFinite(later.loss)).toBe(true);
    expect(later.loss).toBeLessThan(first.loss);
    await expect(trainMil(params, bagsFromRows(signalBags(4, 1).data), { epochs: 1, batchSize: 8, learningRate: 0.01, seed: 1 })).rejects.toThrow(
      'bags.subtypes',
    );
    disposeMil(params);
  }, 60_000);

  it('leaves no tensor behind (with dropout and the proximal term too)', async () => {
    const bags = bagsFromRows(signalBags(20, 5).data);
    const params = createMil({ ...config, dropout: 0.3 }, 4);
    const globals = getMilWeights(params);
    const before = tf.memory().numTensors;
    await trainMil(params, bags, { epochs: 2, batchSize: 6, learningRate: 0.01, seed: 1 });
    await trainMil(params, bags, { epochs: 1, batchSize: 6, learningRate: 0.01, seed: 1, proximalMu: 0.1, globalWeights: globals, classWeights: [1, 2] });
    predictMil(params, bags, 7);
    expect(tf.memory().numTensors).toBe(before);
    disposeMil(params);
    expect(tf.memory().numTensors).toBe(before - milLayout(params.config).length);
  });

  it('refuses bad options, naming them', async () => {
    const bags = bagsFromRows(signalBags(4, 5).data);
    const params = createMil(config, 4);
    const base = { epochs: 1, batchSize: 2, learningRate: 0.01, seed: 1 };
    await expect(trainMil(params, bags, { ...base, epochs: 0 })).rejects.toThrow('epochs');
    await expect(trainMil(params, bags, { ...base, classWeights: [1] })).rejects.toThrow('classWeights');
    await expect(trainMil(params, bags, { ...base, proximalMu: 0.1 })).rejects.toThrow('globalWeights');
    const narrow = createMil({ ...config, dim: 3 }, 1);
    await expect(trainMil(narrow, bags, base)).rejects.toThrow('bags.dim');
    disposeMil(narrow);
    disposeMil(params);
  });
});

describe('getMilWeights / setMilWeights', () => {
  it('round-trips the weights as named tensors and gives the same outputs', () => {
    const bags = bagsFromRows(signalBags(6, 8, true).data);
    const cfg = { ...config, subtypes: 4 };
    const a = createMil(cfg, 1);
    const b = createMil(cfg, 2);
    const weights = getMilWeights(a);
    expect(weights.map((w) => w.name)).toEqual([
      'fc1/kernel',
      'fc1/bias',
      'attention_v/kernel',
      'attention_v/bias',
      'attention_u/kernel',
      'attention_u/bias',
      'attention_w/kernel',
      'head/kernel',
      'head/bias',
      'subtype_head/kernel',
      'subtype_head/bias',
    ]);
    expect(weights.map((w) => w.shape)).toEqual(milLayout(cfg).map((t) => t.shape));
    const again = createMil(cfg, 1);
    expect(getMilWeights(again)).toEqual(weights); // seeded
    disposeMil(again);
    expect(forwardArrays(b, bags).probs).not.toEqual(forwardArrays(a, bags).probs);
    setMilWeights(b, weights);
    expect(forwardArrays(b, bags)).toEqual(forwardArrays(a, bags));
    expect(getMilWeights(b)).toEqual(weights);
    // The module keeps its own copy.
    const kept = weights[0].values[0];
    weights[0].values[0] += 1;
    expect(getMilWeights(b)[0].values[0]).toBe(kept);
    disposeMil(a);
    disposeMil(b);
  });

  it('refuses another layout and writes nothing then', () => {
    const a = createMil(config, 1);
    const before = getMilWeights(a);
    const narrow = createMil({ ...config, attentionUnits: 4 }, 1);
    const other = getMilWeights(narrow);
    disposeMil(narrow);
    expect(() => setMilWeights(a, other)).toThrow(WeightLayoutError);
    expect(() => setMilWeights(a, before.slice(1))).toThrow(WeightLayoutError);
    expect(getMilWeights(a)).toEqual(before);
    disposeMil(a);
  });
});
