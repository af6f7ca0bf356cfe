import type { ModelSpec } from '@histofed/fl-core';
import { runConfigInputSchema } from '../admin/run-config.schema';
import type { RunRecord } from '../persistence/records';
import { encoderSummary, pretrainRoundFields, startFromProblem } from './pretrained-encoder';

const model: ModelSpec = { kind: 'se-cnn', imageSize: 32, numClasses: 2, options: { width: 0.5 } };
const SHA = 'cd'.repeat(32);
const ID = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';

function run(over: Partial<RunRecord> & { kind?: 'pretrain' | 'classify' } = {}): RunRecord {
  const { kind = 'pretrain', ...rest } = over;
  return {
    id: ID,
    status: 'completed',
    statusReason: null,
    config: runConfigInputSchema.parse({ kind, model }),
    completedRounds: 2,
    currentModelHash: 'ee'.repeat(32),
    strategyStateHash: null,
    final: { global: null, perSite: {}, ensemble: null, ensembleMembers: [], encoder: { sha256: SHA, parameters: 10, tensors: 4, contrastiveLoss: 2.5 } },
    createdAt: new Date(),
    updatedAt: new Date(),
    ...rest,
  };
}

describe('a classification run starting from a pretrained encoder (issue 19)', () => {
  const startFrom = { run: ID, sha256: SHA };
  const classifier: ModelSpec = { ...model, subtypeParents: [0, 1], options: { width: 0.5, denseUnits: 16 } };

  it('accepts a completed pretrain run with that hash and an encoder of the same shapes', () => {
    expect(startFromProblem(classifier, startFrom, run())).toBeNull();
  });

  it('names the field and what was expected otherwise', () => {
    expect(startFromProblem(classifier, startFrom, null)).toEqual({ path: ['startFrom', 'run'], message: `run ${ID} does not exist` });
    expect(startFromProblem(classifier, startFrom, run({ kind: 'classify' }))).toEqual({ path: ['startFrom', 'run'], message: expect.stringMatching(/is a classification run/) });
    expect(startFromProblem(classifier, startFrom, run({ status: 'running', final: null }))?.message).toMatch(/is running: startFrom names a completed pretrain run/);
    expect(startFromProblem(classifier, startFrom, run({ final: { global: null, perSite: {}, ensemble: null, ensembleMembers: [] } }))?.message).toMatch(/recorded no encoder/);
    const wrong = startFromProblem(classifier, { ...startFrom, sha256: 'f'.repeat(64) }, run());
    expect(wrong).toEqual({ path: ['startFrom', 'sha256'], message: `the encoder of pretrain run ${ID} has sha256 ${SHA}, startFrom.sha256 is ${'f'.repeat(64)}` });
    expect(startFromProblem({ ...classifier, imageSize: 64 }, startFrom, run())).toEqual({ path: ['model'], message: expect.stringMatching(/imageSize 32.*64/) });
    expect(startFromProblem({ ...classifier, options: { width: 1 } }, startFrom, run())?.message).toMatch(/filters/);
  });

  it('puts the contrastive settings and the encoder to check into the round tasks', () => {
    const p = runConfigInputSchema.parse({ kind: 'pretrain', model });
    expect(pretrainRoundFields(p)).toEqual({ pretrain: p.pretrain, startFrom: null });
    const c = runConfigInputSchema.parse({ model, startFrom });
    expect(pretrainRoundFields(c)).toEqual({ pretrain: null, startFrom });
    // A run stored before issue 19 has neither field.
    expect(pretrainRoundFields({})).toEqual({ pretrain: null, startFrom: null });
    expect(encoderSummary(SHA, [{ name: 'conv1/kernel', shape: [2], values: new Float32Array(2) }], { loss: 3.25, images: 4 })).toEqual({
      sha256: SHA,
      parameters: 2,
      tensors: 1,
      contrastiveLoss: 3.25,
    });
  });
});
