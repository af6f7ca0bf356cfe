import { runConfigInputSchema } from './run-config.schema';

const cnn = { kind: 'small-cnn', imageSize: 32, numClasses: 2 };
const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const SHA = 'ab'.repeat(32);

/** The issues of a refused body, as [path, message]. */
function issues(body: unknown): [string, string][] {
  const r = runConfigInputSchema.safeParse(body);
  if (r.success) throw new Error('not refused');
  return r.error.issues.map((i) => [i.path.join('.'), i.message]);
}

describe('run config: kind, pretrain, startFrom (issue 19, federated pretraining)', () => {
  it("defaults to a classification run; a pretrain run gets its contrastive defaults and neither calibration nor personalization", () => {
    const c = runConfigInputSchema.parse({ model: cnn });
    expect(c).toEqual(expect.objectContaining({ kind: 'classify', pretrain: null, startFrom: null, personalizeEpochs: 1 }));
    expect(c.calibration).not.toBeNull();
    const p = runConfigInputSchema.parse({ kind: 'pretrain', model: cnn });
    expect(p).toEqual(expect.objectContaining({ kind: 'pretrain', personalizeEpochs: 0, calibration: null }));
    expect(p.pretrain).toEqual({ temperature: 0.5, projectionDim: 64, projectionHidden: 128, cropSize: 32, pairsPerImage: 4 });
    expect(runConfigInputSchema.parse({ kind: 'pretrain', model: cnn, pretrain: { cropSize: 96, temperature: 0.2 } }).pretrain).toEqual(
      expect.objectContaining({ cropSize: 96, temperature: 0.2, projectionDim: 64 }),
    );
    // Secure aggregation and FedBN are just another weight update.
    const secure = runConfigInputSchema.parse({
      kind: 'pretrain',
      model: { ...cnn, options: { batchNorm: 1 } },
      localTensors: 'batch-norm',
      secureAggregation: {},
      minSites: 3,
    });
    expect(secure.secureAggregation).not.toBeNull();
    expect(runConfigInputSchema.parse({ model: cnn, startFrom: { run: RUN, sha256: SHA } }).startFrom).toEqual({ run: RUN, sha256: SHA });
  });

  it('refuses what a pretrain run cannot do, naming the field', () => {
    const backbone = issues({ kind: 'pretrain' });
    expect(backbone).toEqual(expect.arrayContaining([['model.kind', expect.stringMatching(/compact CNN.*backbone-head/)]]));
    expect(issues({ kind: 'pretrain', model: cnn, alignment: { method: 'coral', lambda: 1 } })).toEqual(
      expect.arrayContaining([['alignment', expect.stringMatching(/pretrain run.*alignment must be null/)]]),
    );
    expect(issues({ kind: 'pretrain', model: cnn, ensemble: { snapshots: 1 } })).toEqual(expect.arrayContaining([['ensemble', expect.stringMatching(/ensemble must be null/)]]));
    expect(issues({ kind: 'pretrain', model: cnn, rounds: 3, pruning: { ranking: 'weight-norm', steps: [{ round: 2, keep: 0.5 }] } })).toEqual(
      expect.arrayContaining([['pruning', expect.stringMatching(/pruning must be null/)]]),
    );
    expect(issues({ kind: 'pretrain', model: cnn, startFrom: { run: RUN, sha256: SHA } })).toEqual([['startFrom', expect.stringMatching(/classification runs/)]]);
    expect(issues({ kind: 'pretrain', model: cnn, batchSize: 1 })).toEqual([['batchSize', expect.stringMatching(/at least 2/)]]);
    expect(issues({ kind: 'pretrain', model: { ...cnn, options: { batchNorm: 1 } }, localTensors: 'batch-norm-and-heads' })).toEqual([
      ['localTensors', expect.stringMatching(/no classification heads/)],
    ]);
    expect(issues({ kind: 'pretrain', model: cnn, pretrain: { cropSize: 8 } })).toEqual([['pretrain.cropSize', expect.any(String)]]);
    expect(issues({ kind: 'pretrain', model: cnn, pretrain: { views: 2 } })).toEqual([['pretrain', expect.stringMatching(/views/)]]);
  });

  it('refuses pretrain settings on a classification run, and a startFrom the model cannot take', () => {
    expect(issues({ model: cnn, pretrain: {} })).toEqual([['pretrain', expect.stringMatching(/kind 'pretrain'/)]]);
    expect(issues({ startFrom: { run: RUN, sha256: SHA } })).toEqual([['startFrom', expect.stringMatching(/compact CNN/)]]);
    expect(issues({ model: cnn, startFrom: { run: 'x', sha256: 'nope' } }).map(([p]) => p).sort()).toEqual(['startFrom.run', 'startFrom.sha256']);
  });
});
