import * as tf from '@tensorflow/tfjs-core';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { selectBackend } from './backend';
import { buildModel, describeModel } from './models';
import { getWeights, trainableWeightNames } from './weights-bridge';

const spec: ModelSpec = { kind: 'small-cnn', imageSize: 32, numClasses: 2 };

beforeAll(async () => {
  await selectBackend('wasm');
});

describe("a backbone's heads with batch normalization (FedBN)", () => {
  const head = (options: Record<string, number>): ModelSpec => ({
    kind: 'backbone-head',
    imageSize: 32,
    numClasses: 2,
    backbone: { name: 'mobilenet-v2-imagenet', cut: 'x', input: 'signed', features: 6 },
    tiles: { scale: 1, views: 0 },
    options,
  });

  it('normalizes the hidden layer with options.batchNorm 1, and refuses it without a hidden layer', () => {
    const m = buildModel(head({ denseUnits: 4, batchNorm: 1, dropout: 0 }), 1);
    expect(getWeights(m).map((t) => t.name)).toEqual([
      'fc1/kernel',
      'fc1_bn/gamma',
      'fc1_bn/beta',
      'head/kernel',
      'head/bias',
      'fc1_bn/moving_mean',
      'fc1_bn/moving_variance',
    ]);
    const out = tf.tidy(() => tf.sum(m.predict(tf.randomNormal([5, 6])) as tf.Tensor, 1).arraySync() as number[]);
    out.forEach((v) => expect(v).toBeCloseTo(1, 5));
    m.dispose();
    const plain = buildModel(head({ denseUnits: 4 }), 1);
    expect(getWeights(plain).map((t) => t.name)).toEqual(['fc1/kernel', 'fc1/bias', 'head/kernel', 'head/bias']);
    plain.dispose();
    expect(() => buildModel(head({ batchNorm: 1 }), 1)).toThrow(/model.options.batchNorm: a backbone's heads normalize their hidden layer: set denseUnits too/);
  });
});

describe('buildModel', () => {
  it('names every weight explicitly, the same in every instance', () => {
    const a = buildModel(spec, 1);
    const b = buildModel(spec, 1);
    const names = getWeights(a).map((t) => t.name);
    expect(names).toEqual([
      'conv1/kernel',
      'conv1/bias',
      'conv2/kernel',
      'conv2/bias',
      'conv3/kernel',
      'conv3/bias',
      'fc1/kernel',
      'fc1/bias',
      'head/kernel',
      'head/bias',
    ]);
    // tfjs itself suffixes the second instance's variables ('conv1/kernel_1'); ours are stable
    expect(b.weights[0].name).not.toBe('conv1/kernel');
    expect(getWeights(b).map((t) => t.name)).toEqual(names);
    a.dispose();
    b.dispose();
  });

  it('initialises deterministically from the seed', () => {
    const a = getWeights(buildModel(spec, 42));
    const b = getWeights(buildModel(spec, 42));
    const c = getWeights(buildModel(spec, 43));
    expect(b).toEqual(a);
    expect(c[0].values).not.toEqual(a[0].values);
    // kernels are not all zero and differ between layers of the same shape
    expect(a[0].values.some((v) => v !== 0)).toBe(true);
  });

  it('has the documented architecture and parameter count', () => {
    const m = buildModel(spec, 1);
    const d = describeModel(m);
    // conv 3*3*3*16+16, 3*3*16*32+32, 3*3*32*64+64, dense 64*64+64, head 64*2+2
    expect(d.parameters).toBe(448 + 4640 + 18496 + 4160 + 130);
    expect(d.trainableParameters).toBe(d.parameters);
    expect(d.layers.map((l) => l.name)).toEqual([
      'image',
      'center',
      'conv1',
      'pool1',
      'conv2',
      'pool2',
      'conv3',
      'pool3',
      'gap',
      'fc1',
      'dropout',
      'head',
    ]);
    const p = tf.tidy(() => (m.predict(tf.ones([3, 32, 32, 3])) as tf.Tensor).arraySync() as number[][]);
    expect(p).toHaveLength(3);
    for (const row of p) expect(row[0] + row[1]).toBeCloseTo(1, 5);
    m.dispose();
  });

  it('applies width, denseUnits and batchNorm options', () => {
    const m = buildModel({ ...spec, numClasses: 8, options: { width: 0.5, denseUnits: 10, batchNorm: 1 } }, 1);
    const w = getWeights(m);
    const shape = (n: string) => w.find((t) => t.name === n)?.shape;
    expect(shape('conv1/kernel')).toEqual([3, 3, 3, 8]);
    expect(shape('conv3/kernel')).toEqual([3, 3, 16, 32]);
    expect(shape('conv1/bias')).toBeUndefined(); // batch norm supplies the shift
    expect(shape('fc1/kernel')).toEqual([32, 10]);
    expect(shape('head/kernel')).toEqual([10, 8]);
    // non-trainable batch-norm statistics are included, after the trainable weights
    expect(w.map((t) => t.name).slice(-2)).toEqual(['bn3/moving_mean', 'bn3/moving_variance']);
    expect(trainableWeightNames(m)).not.toContain('bn1/moving_mean');
    expect(trainableWeightNames(m)).toContain('bn1/gamma');
    m.dispose();
  });

  it('rejects bad specs with a ValidationError naming the field', () => {
    const bad = (s: Partial<ModelSpec> & Record<string, unknown>, field: string) => {
      expect(() => buildModel({ ...spec, ...s } as ModelSpec)).toThrow(ValidationError);
      expect(() => buildModel({ ...spec, ...s } as ModelSpec)).toThrow(field);
    };
    bad({ kind: 'resnet-9000' }, 'model.kind');
    bad({ imageSize: 8 }, 'model.imageSize');
    bad({ imageSize: 1024 }, 'model.imageSize');
    bad({ imageSize: 31.5 }, 'model.imageSize');
    bad({ numClasses: 1 }, 'model.numClasses');
    bad({ options: { widht: 2 } }, 'model.options.widht');
    bad({ options: { width: -1 } }, 'model.options.width');
    bad({ options: { denseUnits: 2.5 } }, 'model.options.denseUnits');
    bad({ options: { dropout: 1 } }, 'model.options.dropout');
    bad({ options: { seRatio: 4 } }, 'model.options.seRatio'); // small-cnn has no SE blocks
    bad({ kind: 'attention-cnn', options: { attentionKernel: 4 } }, 'model.options.attentionKernel');
    bad({ kind: 'se-cnn', options: { blocks: 5 } }, 'model.options.blocks');
    bad({ subtypeParents: [0] }, 'model.subtypeParents');
    bad({ subtypeParents: [0, 2] }, 'model.subtypeParents[1]');
    bad({ subtypeParents: [0, 0, 0] }, 'stage-1 class 1 has no subtype');
  });
});

describe('SE, attention and two-stage models', () => {
  const twoStage: ModelSpec = { kind: 'se-cnn', imageSize: 32, numClasses: 2, subtypeParents: [0, 0, 0, 0, 1, 1, 1, 1] };

  it('se-cnn (the default) gates every block: parameters and multiply-adds as computed by hand', () => {
    const m = buildModel({ ...spec, kind: 'se-cnn' }, 1);
    const d = describeModel(m);
    // small-cnn's 27,874 plus per block a bottleneck c -> max(2, c/8) -> c with biases:
    // 16: 16*2+2 + 2*16+16 = 82; 32: 32*4+4 + 4*32+32 = 292; 64: 64*8+8 + 8*64+64 = 1096
    expect(d.parameters).toBe(27874 + 82 + 292 + 1096);
    expect(d.layers.map((l) => l.name)).toEqual(expect.arrayContaining(['se1_squeeze', 'se1_reduce', 'se1_expand', 'se1_scale']));
    // conv1 32*32 pixels * 3*3*3*16, conv2 16*16 * 3*3*16*32, conv3 8*8 * 3*3*32*64, then the dense layers
    const convs = 32 * 32 * 432 + 16 * 16 * 4608 + 8 * 8 * 18432;
    const dense = 16 * 2 + 2 * 16 + 32 * 4 + 4 * 32 + 64 * 8 + 8 * 64 + 64 * 64 + 64 * 2;
    expect(d.multiplyAdds).toBe(convs + dense);
    m.dispose();
  });

  it('attention-cnn adds a 7x7 spatial attention per block and still outputs probabilities', () => {
    const m = buildModel({ ...spec, kind: 'attention-cnn' }, 1);
    const names = getWeights(m).map((t) => t.name);
    expect(names).toContain('sa1_conv/kernel');
    expect(getWeights(m).find((t) => t.name === 'sa2_conv/kernel')?.shape).toEqual([7, 7, 2, 1]);
    const p = tf.tidy(() => (m.predict(tf.randomUniform([2, 32, 32, 3], 0, 1, 'float32', 3)) as tf.Tensor).arraySync() as number[][]);
    for (const row of p) expect(row[0] + row[1]).toBeCloseTo(1, 5);
    m.dispose();
  });

  it('a two-stage spec outputs the stage-1 softmax followed by the subtype softmax', () => {
    const m = buildModel(twoStage, 1);
    expect(m.outputs[0].shape).toEqual([null, 10]);
    expect(getWeights(m).find((t) => t.name === 'subtype_head/kernel')?.shape).toEqual([64, 8]);
    const p = tf.tidy(() => (m.predict(tf.randomUniform([3, 32, 32, 3], 0, 1, 'float32', 5)) as tf.Tensor).arraySync() as number[][]);
    for (const row of p) {
      expect(row[0] + row[1]).toBeCloseTo(1, 5);
      expect(row.slice(2).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    }
    // Same backbone initialisation as the single-stage model of the same seed.
    const single = buildModel({ ...twoStage, subtypeParents: undefined }, 1);
    expect(getWeights(single).find((t) => t.name === 'conv2/kernel')?.values).toEqual(
      getWeights(m).find((t) => t.name === 'conv2/kernel')?.values,
    );
    m.dispose();
    single.dispose();
  });
});

describe('per-block filter and SE bottleneck options (pruned models)', () => {
  const se: ModelSpec = { kind: 'se-cnn', imageSize: 32, numClasses: 2 };
  const shapes = (s: ModelSpec) => {
    const m = buildModel(s, 1);
    const out = Object.fromEntries(getWeights(m).map((t) => [t.name, t.shape]));
    m.dispose();
    return out;
  };

  it('filters{n} and seUnits{n} set the block shapes; the defaults build what the spec without them builds, value for value', () => {
    const s = shapes({ ...se, options: { filters1: 12, filters3: 40, seUnits2: 7 } });
    expect(s['conv1/kernel']).toEqual([3, 3, 3, 12]);
    expect(s['conv2/kernel']).toEqual([3, 3, 12, 32]);
    expect(s['se2_reduce/kernel']).toEqual([32, 7]);
    expect(s['conv3/kernel']).toEqual([3, 3, 32, 40]);
    expect(s['se3_reduce/kernel']).toEqual([40, 5]); // default max(2, round(40 / 8))
    expect(s['fc1/kernel']).toEqual([40, 64]);
    // the filters override the width
    expect(shapes({ ...se, options: { width: 2, filters2: 8 } })['conv2/kernel']).toEqual([3, 3, 32, 8]);
    const plain = buildModel(se, 5);
    const explicit = buildModel({ ...se, options: { filters1: 16, filters2: 32, filters3: 64, seUnits1: 2, seUnits2: 4, seUnits3: 8 } }, 5);
    expect(getWeights(explicit)).toEqual(getWeights(plain));
    plain.dispose();
    explicit.dispose();
  });

  it('validates them like the other options', () => {
    const bad = (options: Record<string, number>, message: RegExp, kind = 'se-cnn') => {
      expect(() => buildModel({ ...se, kind, options }, 1)).toThrow(ValidationError);
      expect(() => buildModel({ ...se, kind, options }, 1)).toThrow(message);
    };
    bad({ filters1: 0 }, /model.options.filters1: must be an integer in \[1, 4096\], got 0/);
    bad({ filters2: 2.5 }, /model.options.filters2/);
    bad({ filters4: 8 }, /model.options.filters4: the model has 3 blocks/);
    bad({ seUnits3: 0 }, /model.options.seUnits3/);
    bad({ seUnits1: 2 }, /model.options.seUnits1: unknown option for small-cnn/, 'small-cnn');
    expect(shapes({ ...se, kind: 'small-cnn', options: { blocks: 4, filters4: 20 } })['fc1/kernel']).toEqual([20, 64]);
  });
});
