import { DEFAULT_MACENKO_TARGET } from '@histofed/data';
import { describeZodError } from '@histofed/protocol';
import { runConfigInputSchema } from './run-config.schema';

describe('run config (POST /api/runs body)', () => {
  it('fills every default', () => {
    const c = runConfigInputSchema.parse({});
    expect(c).toEqual(
      expect.objectContaining({ strategy: 'fedavg', rounds: 3, minSites: 1, personalizeEpochs: 1, stainNormalization: null, patientWeighting: false }),
    );
    // The default task is the two-stage BreakHis classifier: heads on the frozen ImageNet
    // MobileNetV2's features of native-resolution 224 px tiles, with augmented training views.
    expect(c.model).toEqual({
      kind: 'backbone-head',
      imageSize: 224,
      numClasses: 2,
      subtypeParents: [0, 0, 0, 0, 1, 1, 1, 1],
      backbone: { name: 'mobilenet-v2-imagenet', cut: 'block_10_depthwise_relu', input: 'signed' },
      tiles: { scale: 1, views: 8 },
      options: { denseUnits: 0, dropout: 0.25 },
    });
    expect(c.classWeighting).toBe('balanced');
    expect(c.augment).toBe(true);
    // Whole-image models are not augmented unless asked; a backbone spec is checked for shape here.
    expect(runConfigInputSchema.parse({ model: { kind: 'se-cnn', imageSize: 64, numClasses: 2 } }).augment).toBe(false);
    expect(runConfigInputSchema.parse({ augment: false }).augment).toBe(false);
    const bad = runConfigInputSchema.safeParse({ model: { kind: 'backbone-head', imageSize: 224, numClasses: 2, backbone: { name: 'resnet', cut: 'x', input: 'signed' } } });
    expect(bad.success).toBe(false);
    expect(describeZodError(bad.error!)).toMatch(/model.backbone.name/);
  });

  it('takes stain normalization as none, macenko (reference vectors) or a fitted target', () => {
    expect(runConfigInputSchema.parse({ stainNormalization: 'none' }).stainNormalization).toBeNull();
    expect(runConfigInputSchema.parse({ stainNormalization: 'macenko' }).stainNormalization).toEqual(DEFAULT_MACENKO_TARGET);
    const reinhard = { method: 'reinhard', space: 'cie-lab', mean: [70, 15, -10], std: [12, 6, 5], pixels: 1000 };
    expect(runConfigInputSchema.parse({ stainNormalization: reinhard }).stainNormalization).toEqual(reinhard);
  });

  it('names what is wrong', () => {
    const bad = runConfigInputSchema.safeParse({
      rounds: 0,
      minSites: 3,
      maxSites: 2,
      stainNormalization: { method: 'macenko', stainMatrix: 'red' },
      colour: 'blue',
    });
    expect(bad.success).toBe(false);
    const text = describeZodError(bad.error!);
    expect(text).toMatch(/rounds: /);
    expect(text).toMatch(/stainNormalization/);
    expect(text).toMatch(/colour/);
  });

  it('takes a strategy with options and refuses bad options naming them', () => {
    expect(runConfigInputSchema.parse({ strategy: 'trimmed-mean', strategyOptions: { trim: 0.25 } })).toEqual(
      expect.objectContaining({ strategy: 'trimmed-mean', strategyOptions: { trim: 0.25 } }),
    );
    const eta = runConfigInputSchema.safeParse({ strategy: 'fedadam', strategyOptions: { eta: -1 } });
    expect(eta.success).toBe(false);
    expect(describeZodError(eta.error!)).toMatch(/strategyOptions.*eta/);
    const unknown = runConfigInputSchema.safeParse({ strategy: 'median', strategyOptions: { trim: 0.1 } });
    expect(describeZodError(unknown.error!)).toMatch(/no option "trim"/);
    expect(runConfigInputSchema.safeParse({ strategy: 'krum' }).success).toBe(false);
  });
});

describe('run config: secure aggregation', () => {
  const secure = { minSites: 3, personalizeEpochs: 0, secureAggregation: {} };

  it('is off by default and takes defaults for its options when on', () => {
    expect(runConfigInputSchema.parse({}).secureAggregation).toBeNull();
    expect(runConfigInputSchema.parse(secure).secureAggregation).toEqual({ clipRange: 1, stageTimeoutSeconds: 60 });
    expect(runConfigInputSchema.parse({ ...secure, strategy: 'fedadam', secureAggregation: { neighbours: 6, threshold: 4 } }).secureAggregation).toEqual(
      expect.objectContaining({ neighbours: 6, threshold: 4 }),
    );
  });

  it('makes the choice against per-site models explicit, and refuses what cannot work on a masked sum', () => {
    const reason = (body: object) => {
      const r = runConfigInputSchema.safeParse(body);
      return r.success ? '' : describeZodError(r.error);
    };
    expect(reason({ ...secure, personalizeEpochs: 1 })).toMatch(/personalizeEpochs: secure aggregation keeps per-site models .* set personalizeEpochs to 0/);
    expect(reason({ ...secure, strategy: 'median' })).toMatch(/strategy: median needs each site's update/);
    expect(reason({ ...secure, minSites: 2 })).toMatch(/minSites: secure aggregation needs minSites >= 3/);
    expect(reason({ ...secure, secureAggregation: { neighbours: 3, threshold: 4 } })).toMatch(/threshold must not exceed neighbours/);
    expect(reason({ ...secure, secureAggregation: { neighbours: 6, threshold: 3 } })).toMatch(/threshold must be more than half/);
    expect(reason({ ...secure, secureAggregation: { clipRange: -1, extra: 1 } })).toMatch(/clipRange/);
  });

  it('keeps batch-norm tensors local (FedBN) only for a model that trains batch normalization, and not with secure aggregation', () => {
    const reason = (body: object) => {
      const r = runConfigInputSchema.safeParse(body);
      return r.success ? '' : describeZodError(r.error);
    };
    expect(runConfigInputSchema.parse({}).localTensors).toBe('none');
    const bn = { model: { kind: 'se-cnn', imageSize: 64, numClasses: 2, options: { batchNorm: 1 } } };
    expect(runConfigInputSchema.parse({ ...bn, localTensors: 'batch-norm' }).localTensors).toBe('batch-norm');
    expect(runConfigInputSchema.parse({ ...bn, localTensors: 'batch-norm-and-heads' }).localTensors).toBe('batch-norm-and-heads');
    expect(reason({ localTensors: 'batch-norm' })).toMatch(/localTensors: model backbone-head trains no batch normalization/);
    // The default recipe with a normalized hidden layer in its heads.
    const heads = runConfigInputSchema.parse({}).model;
    expect(runConfigInputSchema.parse({ model: { ...heads, options: { denseUnits: 32, batchNorm: 1, dropout: 0.25 } }, localTensors: 'batch-norm' }).localTensors).toBe('batch-norm');
    expect(reason({ model: { kind: 'se-cnn', imageSize: 64, numClasses: 2 }, localTensors: 'batch-norm' })).toMatch(/options\.batchNorm 1/);
    // With secure aggregation the sites mask only the shared tensors.
    expect(reason({ ...bn, localTensors: 'batch-norm', secureAggregation: {}, minSites: 3, personalizeEpochs: 0 })).toBe('');
    expect(reason({ ...bn, localTensors: 'fedbn' })).toMatch(/localTensors/);
  });

  it('fits a federated stain target only in place of a fixed one', () => {
    const reason = (body: object) => {
      const r = runConfigInputSchema.safeParse(body);
      return r.success ? '' : describeZodError(r.error);
    };
    expect(runConfigInputSchema.parse({}).federatedStainTarget).toBeNull();
    expect(runConfigInputSchema.parse({ federatedStainTarget: 'reinhard' }).federatedStainTarget).toBe('reinhard');
    expect(reason({ federatedStainTarget: 'macenko', stainNormalization: 'macenko' })).toMatch(/stainNormalization: a federated stain target \(macenko\) is fitted/);
    expect(reason({ federatedStainTarget: 'vahadane' })).toMatch(/federatedStainTarget/);
    // Stain augmentation jitters augmented images, within HED's sensible range.
    expect(runConfigInputSchema.parse({ stainAugmentation: 0.1 }).stainAugmentation).toBe(0.1);
    expect(reason({ stainAugmentation: 0.1, augment: false })).toMatch(/stainAugmentation: stain augmentation jitters augmented training images: it needs augment true/);
    expect(reason({ stainAugmentation: 0.9 })).toMatch(/stainAugmentation/);
  });

  it('aligns features only where a hidden layer computes them, narrow enough to report, and not under secure aggregation', () => {
    const reason = (body: object) => {
      const r = runConfigInputSchema.safeParse(body);
      return r.success ? '' : describeZodError(r.error);
    };
    const cnn = { model: { kind: 'se-cnn', imageSize: 64, numClasses: 2 } };
    expect(runConfigInputSchema.parse({ ...cnn, alignment: { method: 'mmd', lambda: 0.5 } }).alignment).toEqual({ method: 'mmd', lambda: 0.5 });
    expect(runConfigInputSchema.parse({}).alignment).toBeNull();
    expect(reason({ alignment: { method: 'coral', lambda: 1 } })).toMatch(/alignment: the model's heads read its inputs directly \(denseUnits 0\)/);
    expect(reason({ model: { kind: 'se-cnn', imageSize: 64, numClasses: 2, options: { denseUnits: 256 } }, alignment: { method: 'coral', lambda: 1 } })).toMatch(
      /penultimate layer has 256 units; feature moments travel for at most 128/,
    );
    expect(reason({ ...cnn, alignment: { method: 'coral', lambda: 1 }, secureAggregation: {}, minSites: 3, personalizeEpochs: 0 })).toMatch(/alignment: feature alignment reports/);
    expect(reason({ ...cnn, alignment: { method: 'dann', lambda: 1 } })).toMatch(/alignment\.method/);
    expect(reason({ ...cnn, alignment: { method: 'coral', lambda: -1 } })).toMatch(/alignment\.lambda/);
  });
});

describe('run config: calibration', () => {
  const reason = (body: object) => {
    const r = runConfigInputSchema.safeParse(body);
    return r.success ? null : describeZodError(r.error);
  };

  it('is on by default (temperature scaling, review rate 0.2, the default grid), null turns it off', () => {
    expect(runConfigInputSchema.parse({}).calibration).toEqual({ temperature: true, reviewRate: 0.2, timeoutSeconds: 120 });
    expect(runConfigInputSchema.parse({ calibration: null }).calibration).toBeNull();
    expect(runConfigInputSchema.parse({ calibration: { reviewRate: 0.1, grid: [0.5, 1, 2] } }).calibration).toEqual({ temperature: true, reviewRate: 0.1, grid: [0.5, 1, 2], timeoutSeconds: 120 });
    expect(runConfigInputSchema.parse({ calibration: { temperature: false } }).calibration).toEqual({ temperature: false, reviewRate: 0.2, timeoutSeconds: 120 });
    expect(runConfigInputSchema.parse({ calibration: { reviewRate: null } }).calibration).toEqual(expect.objectContaining({ temperature: true, reviewRate: null }));
  });

  it('names what is wrong', () => {
    expect(reason({ calibration: { reviewRate: 1.5 } })).toMatch(/^calibration.reviewRate: /);
    expect(reason({ calibration: { grid: [2, 1] } })).toMatch(/^calibration.grid: temperatures must be increasing/);
    expect(reason({ calibration: { grid: [0, 1] } })).toMatch(/^calibration.grid.0: /);
    expect(reason({ calibration: { grid: [1, 1000] } })).toMatch(/^calibration.grid.1: /);
    expect(reason({ calibration: { grid: Array.from({ length: 65 }, (_, i) => i + 1) } })).toMatch(/^calibration.grid: /);
    expect(reason({ calibration: { temperature: false, reviewRate: null } })).toMatch(/calibration.reviewRate: no temperature and no review rate leaves nothing to fit: set calibration to null/);
    expect(reason({ calibration: { temperature: false, grid: [1, 2] } })).toMatch(/calibration.grid: a grid needs temperature true/);
    expect(reason({ calibration: { temperature: 'yes' } })).toMatch(/^calibration.temperature: /);
    expect(reason({ calibration: { bins: 20 } })).toMatch(/calibration.*bins/);
  });
});

describe('run config: ensemble snapshots (issue 16)', () => {
  const reason = (body: object) => {
    const r = runConfigInputSchema.safeParse(body);
    return r.success ? null : describeZodError(r.error);
  };

  it('is off by default; snapshots K adds the last K earlier global models, also under secure aggregation', () => {
    expect(runConfigInputSchema.parse({}).ensemble).toBeNull();
    const defaults = { combiner: 'mean', fitTimeoutSeconds: 600, boosting: null };
    expect(runConfigInputSchema.parse({ ensemble: {} }).ensemble).toEqual({ snapshots: 0, ...defaults });
    expect(runConfigInputSchema.parse({ rounds: 5, ensemble: { snapshots: 3 } }).ensemble).toEqual({ snapshots: 3, ...defaults });
    expect(
      runConfigInputSchema.parse({ rounds: 5, minSites: 3, personalizeEpochs: 0, secureAggregation: {}, ensemble: { snapshots: 2 } }).ensemble,
    ).toEqual({ snapshots: 2, ...defaults });
    // A weighted mean fitted with the sites (also under secure aggregation: every site holds the global models).
    expect(
      runConfigInputSchema.parse({ rounds: 5, minSites: 3, personalizeEpochs: 0, secureAggregation: {}, ensemble: { snapshots: 2, combiner: 'weighted' } }).ensemble,
    ).toEqual({ snapshots: 2, combiner: 'weighted', fitTimeoutSeconds: 600, boosting: null });
  });

  it('boosting adds boosted members (also under secure aggregation) and gives a weighted combiner members to fit', () => {
    expect(runConfigInputSchema.parse({ rounds: 3, ensemble: { boosting: { members: 2 } } }).ensemble?.boosting).toEqual({ members: 2, rounds: 2, strength: 2, maxRatio: 20 });
    expect(
      runConfigInputSchema.parse({ rounds: 3, minSites: 3, personalizeEpochs: 0, secureAggregation: {}, ensemble: { combiner: 'weighted', boosting: { members: 1, rounds: 1 } } }).ensemble,
    ).toMatchObject({ snapshots: 0, combiner: 'weighted', boosting: { members: 1, rounds: 1 } });
    expect(reason({ ensemble: { boosting: { members: 0 } } })).toMatch(/^ensemble.boosting.members: /);
    expect(reason({ ensemble: { boosting: { members: 5 } } })).toMatch(/^ensemble.boosting.members: /);
    expect(reason({ ensemble: { boosting: { members: 1, strength: -1 } } })).toMatch(/^ensemble.boosting.strength: /);
    expect(reason({ ensemble: { boosting: { members: 1, alpha: 1 } } })).toMatch(/ensemble.boosting.*alpha/);
    expect(
      reason({ model: { kind: 'small-cnn', imageSize: 24, numClasses: 2, options: { batchNorm: 1 } }, localTensors: 'batch-norm', ensemble: { boosting: { members: 1 } } }),
    ).toMatch(/ensemble.boosting: boosted members are global models/);
  });

  it("stacking (a meta-learner fitted with the sites) reads members every site holds: snapshots, no personalization; stackingIterations bounded", () => {
    expect(runConfigInputSchema.parse({ rounds: 3, personalizeEpochs: 0, ensemble: { snapshots: 1, combiner: 'stacking' } }).ensemble).toEqual({
      snapshots: 1,
      combiner: 'stacking',
      fitTimeoutSeconds: 600,
      boosting: null,
    });
    // Also under secure aggregation (the sites hold every global model), with its own number of steps.
    expect(
      runConfigInputSchema.parse({ rounds: 5, minSites: 3, personalizeEpochs: 0, secureAggregation: {}, ensemble: { snapshots: 2, combiner: 'stacking', stackingIterations: 300 } }).ensemble,
    ).toEqual({ snapshots: 2, combiner: 'stacking', stackingIterations: 300, fitTimeoutSeconds: 600, boosting: null });
    expect(reason({ rounds: 5, ensemble: { snapshots: 1, combiner: 'stacking' } })).toMatch(
      /^personalizeEpochs: a stacking meta-learner reads every member's output, and the other sites cannot score a site's personalized model: set personalizeEpochs to 0/,
    );
    expect(reason({ rounds: 5, personalizeEpochs: 0, ensemble: { combiner: 'stacking' } })).toMatch(/^ensemble.combiner: a stacking meta-learner .* needs snapshots >= 1/);
    expect(reason({ rounds: 5, personalizeEpochs: 0, ensemble: { snapshots: 1, combiner: 'stacking', stackingIterations: 0 } })).toMatch(/^ensemble.stackingIterations: /);
    expect(reason({ rounds: 5, personalizeEpochs: 0, ensemble: { snapshots: 1, combiner: 'stacking', stackingIterations: 1001 } })).toMatch(/^ensemble.stackingIterations: /);
    expect(reason({ rounds: 5, personalizeEpochs: 0, ensemble: { snapshots: 1, combiner: 'stacking', stackingIterations: 2.5 } })).toMatch(/^ensemble.stackingIterations: /);
    expect(reason({ rounds: 5, ensemble: { snapshots: 1, combiner: 'weighted', stackingIterations: 100 } })).toMatch(/^ensemble.stackingIterations: stackingIterations is for combiner 'stacking'/);
    expect(
      reason({ rounds: 5, personalizeEpochs: 0, model: { kind: 'small-cnn', imageSize: 24, numClasses: 65 }, ensemble: { snapshots: 1, combiner: 'stacking' } }),
    ).toMatch(/^ensemble.combiner: a stacked head has at most 64 classes; the model has 65/);
  });

  it('names what is wrong', () => {
    expect(reason({ rounds: 3, ensemble: { snapshots: 3 } })).toMatch(/ensemble.snapshots: a run of 3 rounds has at most 2 earlier global models/);
    expect(reason({ rounds: 20, ensemble: { snapshots: 9 } })).toMatch(/^ensemble.snapshots: /);
    expect(reason({ rounds: 5, ensemble: { snapshots: 1.5 } })).toMatch(/^ensemble.snapshots: /);
    expect(reason({ rounds: 5, ensemble: { bags: 2 } })).toMatch(/ensemble.*bags/);
    expect(reason({ rounds: 5, ensemble: { combiner: 'weighted' } })).toMatch(/^ensemble.combiner: a weighted combiner .* needs snapshots >= 1/);
    expect(reason({ rounds: 5, ensemble: { snapshots: 1, combiner: 'boosted' } })).toMatch(/^ensemble.combiner: /);
    expect(reason({ rounds: 5, ensemble: { snapshots: 1, fitTimeoutSeconds: 0 } })).toMatch(/^ensemble.fitTimeoutSeconds: /);
    expect(
      reason({ rounds: 5, model: { kind: 'small-cnn', imageSize: 24, numClasses: 2, options: { batchNorm: 1 } }, localTensors: 'batch-norm', ensemble: { snapshots: 2 } }),
    ).toMatch(/ensemble.snapshots: snapshots of earlier global models are not built for local tensors/);
  });
});

describe('run config: channel pruning (issue 18)', () => {
  const reason = (body: object) => {
    const r = runConfigInputSchema.safeParse(body);
    return r.success ? null : describeZodError(r.error);
  };
  const seCnn = { kind: 'se-cnn', imageSize: 24, numClasses: 2 };

  it('is off by default; steps prune an SE-CNN by the sites\' SE gates (or any compact CNN by weight norm)', () => {
    expect(runConfigInputSchema.parse({}).pruning).toBeNull();
    expect(runConfigInputSchema.parse({ rounds: 4, model: seCnn, pruning: { steps: [{ round: 2, keep: 0.5 }, { round: 4, keep: 0.5 }] } }).pruning).toEqual({
      ranking: 'se-gate',
      steps: [
        { round: 2, keep: 0.5 },
        { round: 4, keep: 0.5 },
      ],
      statsTimeoutSeconds: 300,
    });
    expect(reason({ rounds: 3, model: { kind: 'small-cnn', imageSize: 24, numClasses: 2 }, pruning: { ranking: 'weight-norm', steps: [{ round: 2, keep: 0.6 }] } })).toBeNull();
  });

  it('refuses what it cannot do, naming the field', () => {
    expect(reason({ rounds: 3, pruning: { steps: [{ round: 2, keep: 0.5 }] } })).toMatch(/^pruning.ranking: se-gate ranking prunes the conv channels of se-cnn, attention-cnn; the model is backbone-head/);
    expect(reason({ rounds: 3, model: seCnn, pruning: { steps: [{ round: 1, keep: 0.5 }] } })).toMatch(/^pruning.steps.0.round: /);
    expect(reason({ rounds: 3, model: seCnn, pruning: { steps: [{ round: 2, keep: 1 }] } })).toMatch(/^pruning.steps.0.keep: /);
    expect(reason({ rounds: 3, model: seCnn, pruning: { steps: [{ round: 3, keep: 0.5 }, { round: 2, keep: 0.5 }] } })).toMatch(/increasing round order/);
    expect(reason({ rounds: 3, model: seCnn, pruning: { steps: [{ round: 4, keep: 0.5 }] } })).toMatch(/after the run's last round \(3\)/);
    expect(reason({ rounds: 3, model: seCnn, pruning: { steps: [] } })).toMatch(/^pruning.steps: /);
    expect(reason({ rounds: 3, model: seCnn, ensemble: { snapshots: 1 }, pruning: { steps: [{ round: 2, keep: 0.5 }] } })).toMatch(/^pruning.ensemble: snapshots/);
    expect(
      reason({ rounds: 3, model: { ...seCnn, options: { batchNorm: 1 } }, localTensors: 'batch-norm', pruning: { steps: [{ round: 2, keep: 0.5 }] } }),
    ).toMatch(/^pruning.localTensors: /);
  });
});

describe('run config: fusion with a clinical table (issue 19)', () => {
  const reason = (body: object) => {
    const r = runConfigInputSchema.safeParse(body);
    return r.success ? '' : describeZodError(r.error);
  };
  const clinical = { columns: [{ name: 'age', type: 'numeric', min: 20, max: 90 }, { name: 'receptor', type: 'categorical', levels: ['negative', 'positive'] }] };
  const defaultModel = runConfigInputSchema.parse({}).model;

  it('declares the columns in the model spec, where every site reads them', () => {
    const c = runConfigInputSchema.parse({ model: { ...defaultModel, clinical } });
    expect(c.model.clinical).toEqual(clinical);
    expect(runConfigInputSchema.parse({}).model.clinical).toBeUndefined();
  });

  it('refuses a declaration the fusion heads cannot read, and bad columns, naming the field', () => {
    expect(reason({ model: { kind: 'se-cnn', imageSize: 64, numClasses: 2, clinical } })).toMatch(/model\.clinical: .*needs kind backbone-head, got se-cnn/);
    expect(reason({ model: { ...defaultModel, kind: 'attention-mil', clinical } })).toMatch(/model\.clinical: .*got attention-mil/);
    expect(reason({ model: { ...defaultModel, backbone: { ...defaultModel.backbone, trainFrom: 'block_9_expand' }, clinical } })).toMatch(/model\.clinical: .*leave backbone.trainFrom out/);
    expect(reason({ model: { ...defaultModel, clinical: { columns: [{ name: 'age', type: 'numeric', min: 90, max: 20 }] } } })).toMatch(/model\.clinical.*max: must be greater than min/);
    expect(reason({ model: { ...defaultModel, clinical }, alignment: { method: 'coral', lambda: 1 } })).toMatch(/alignment: feature alignment and fusion/);
  });
});
