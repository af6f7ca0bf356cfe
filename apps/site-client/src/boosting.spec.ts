import { ModelSpec } from '@histofed/fl-core';
import { brightDarkImages, buildModelAsync, evaluateModel, getWeights, selectBackend } from '@histofed/ml';
import { boostingRowWeights } from './boosting';

const spec: ModelSpec = { kind: 'small-cnn', imageSize: 16, numClasses: 2 };

describe('boosting weights at the site (issue 16)', () => {
  beforeAll(async () => {
    await selectBackend('cpu');
  });

  it("weighs each training image by the ensemble's error on it: heavier where the members' mean gives its class less, mean 1 per class", async () => {
    const data = brightDarkImages(12, 16, 4);
    const models = [await buildModelAsync(spec, 1), await buildModelAsync(spec, 2)];
    const members = models.map((m) => getWeights(m));
    // The members' mean probability of each image's own class, computed independently.
    const own = new Float64Array(data.count);
    for (const m of models) {
      const p = evaluateModel(m, data).probabilities;
      for (let i = 0; i < data.count; i++) own[i] += p[i * 2 + data.labels[i]] / models.length;
      m.dispose();
    }
    const r = await boostingRowWeights(spec, members, data, { strength: 2, maxRatio: 20 });
    expect(r.weights).toHaveLength(data.count);
    expect(r.images).toBe(data.count);
    for (const c of [0, 1]) {
      const idx = [...data.labels.keys()].filter((i) => data.labels[i] === c);
      expect(idx.reduce((s, i) => s + r.weights[i], 0) / idx.length).toBeCloseTo(1, 5);
      // Within a class, a lower probability of the true class never weighs less.
      for (const i of idx) for (const j of idx) if (own[i] < own[j] - 1e-6) expect(r.weights[i]).toBeGreaterThanOrEqual(r.weights[j] - 1e-6);
    }
    expect(r.minWeight).toBeLessThanOrEqual(r.maxWeight);
    expect(r.ensembleAccuracy).toBeGreaterThanOrEqual(0);
    expect(r.ensembleAccuracy).toBeLessThanOrEqual(1);
  });

  it('spreads an image\'s weight over its tile rows, and refuses an empty ensemble', async () => {
    const images = brightDarkImages(4, 16, 7);
    // Two rows per image (as tiles would be): rows 2i and 2i+1 belong to image i.
    const imageOf = Int32Array.from({ length: 8 }, (_, r) => r >> 1);
    const rows = { ...images, count: 8, images: new Float32Array(8 * 16 * 16 * 3), labels: Int32Array.from(imageOf, (i) => images.labels[i]), groups: Array.from(imageOf, (i) => images.groups?.[i] ?? `p${i}`), imageOf };
    for (let r = 0; r < 8; r++) rows.images.set(images.images.subarray((r >> 1) * 768, ((r >> 1) + 1) * 768), r * 768);
    const model = await buildModelAsync(spec, 3);
    const members = [getWeights(model)];
    model.dispose();
    const r = await boostingRowWeights(spec, members, rows as typeof images, { strength: 3, maxRatio: 20 });
    expect(r.images).toBe(4);
    for (let i = 0; i < 4; i++) expect(r.weights[2 * i]).toBe(r.weights[2 * i + 1]);
    await expect(boostingRowWeights(spec, [], images, { strength: 2, maxRatio: 20 })).rejects.toThrow(/no ensemble member/);
  });
});
