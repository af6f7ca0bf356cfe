import { roundConfigSchema } from './schemas';

const base = { runId: '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e', round: 1, model: { kind: 'small-cnn', imageSize: 32, numClasses: 2 }, localEpochs: 1, batchSize: 4, learningRate: 0.01, proximalMu: 0, seed: 1 };
const pretrain = { temperature: 0.5, projectionDim: 64, projectionHidden: 128, cropSize: 64, pairsPerImage: 4 };

describe('round config: contrastive pretraining and a pretrained start (issue 19)', () => {
  it('is a classification round unless it says otherwise (a coordinator before issue 19 sends neither field)', () => {
    const c = roundConfigSchema.parse(base);
    expect(c.pretrain).toBeNull();
    expect(c.startFrom).toBeNull();
    expect(roundConfigSchema.parse({ ...base, pretrain }).pretrain).toEqual(pretrain);
    expect(roundConfigSchema.parse({ ...base, startFrom: { run: base.runId, sha256: 'a'.repeat(64) } }).startFrom).toEqual({ run: base.runId, sha256: 'a'.repeat(64) });
  });

  it('refuses settings out of bounds, unknown fields and a malformed hash', () => {
    for (const bad of [{ ...pretrain, temperature: 0 }, { ...pretrain, cropSize: 4096 }, { ...pretrain, pairsPerImage: 0 }, { ...pretrain, projectionDim: 1 }, { ...pretrain, extra: 1 }]) {
      expect(roundConfigSchema.safeParse({ ...base, pretrain: bad }).success).toBe(false);
    }
    expect(roundConfigSchema.safeParse({ ...base, startFrom: { run: base.runId, sha256: 'A'.repeat(64) } }).success).toBe(false);
    expect(roundConfigSchema.safeParse({ ...base, startFrom: { run: 'nope', sha256: 'a'.repeat(64) } }).success).toBe(false);
  });
});
