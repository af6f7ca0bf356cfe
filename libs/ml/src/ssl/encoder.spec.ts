import type { ModelSpec } from '@histofed/fl-core';
import { encodeWeights, sha256Hex } from '@histofed/fl-core';
import { selectBackend } from '../backend';
import { buildModel } from '../models';
import { getWeights } from '../weights-bridge';
import { buildContrastiveModel, disposeContrastiveModel } from './contrastive-model';
import { contrastiveModelWeights, encoderHash, encoderSpecProblem, encoderWeights, isEncoderTensor, withEncoder } from './encoder';

const spec: ModelSpec = { kind: 'se-cnn', imageSize: 16, numClasses: 2, subtypeParents: [0, 0, 1, 1], options: { width: 0.5, batchNorm: 1 } };

describe('the encoder of a compact CNN (federated pretraining)', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });

  it("is exactly the layers the projection head reads through (the classifier's up to gap), in the model's order", () => {
    const model = buildContrastiveModel(spec, 4, 8, 16);
    try {
      const classifier = getWeights(model.classifier);
      const projector = getWeights(model.projector);
      // The structural split: the projector's own tensors are proj1/proj2, the rest is shared with the classifier.
      const shared = projector.filter((t) => !t.name.startsWith('proj')).map((t) => t.name);
      expect(encoderWeights(spec, classifier).map((t) => t.name)).toEqual(shared);
      expect(encoderWeights(spec, projector).map((t) => t.name)).toEqual(shared);
      expect(shared).toEqual(expect.arrayContaining(['conv1/kernel', 'bn3/moving_variance', 'se2_reduce/kernel']));
      expect(classifier.filter((t) => !isEncoderTensor(t.name)).map((t) => t.name.split('/')[0])).toEqual(
        expect.arrayContaining(['fc1', 'head', 'subtype_head']),
      );
      // The same encoder seen from either model has the same hash, the content address of its blob.
      expect(encoderHash(spec, classifier)).toBe(encoderHash(spec, projector));
      expect(encoderHash(spec, classifier)).toBe(sha256Hex(encodeWeights(encoderWeights(spec, classifier))));
    } finally {
      disposeContrastiveModel(model);
    }
  });

  it('changes its hash with any encoder value, not with the heads', () => {
    const weights = contrastiveModelWeights(spec, 1, 8, 16);
    const base = encoderHash(spec, weights);
    const bump = (name: string) =>
      weights.map((t) => (t.name === name ? { ...t, values: Float32Array.from(t.values, (v, i) => (i === 0 ? v + 1e-3 : v)) } : t));
    expect(encoderHash(spec, bump('conv2/kernel'))).not.toBe(base);
    expect(encoderHash(spec, bump('bn1/moving_mean'))).not.toBe(base);
    expect(encoderHash(spec, bump('proj2/kernel'))).toBe(base);
  });

  it("puts a pretrained encoder into a fresh classifier (heads as initialised) and refuses one of another layout", () => {
    const pretrained = encoderWeights(spec, contrastiveModelWeights(spec, 7, 8, 16));
    const other = { ...spec, options: { ...spec.options, denseUnits: 12 } };
    const m = buildModel(other, 2);
    const fresh = getWeights(m);
    m.dispose();
    const started = withEncoder(other, fresh, pretrained);
    expect(started.map((t) => t.name)).toEqual(fresh.map((t) => t.name));
    expect(encoderHash(other, started)).toBe(sha256Hex(encodeWeights(pretrained)));
    expect(started.find((t) => t.name === 'head/kernel')).toBe(fresh.find((t) => t.name === 'head/kernel'));
    const wider = { ...spec, options: { width: 1, batchNorm: 1 } };
    const w = buildModel(wider, 2);
    const wideWeights = getWeights(w);
    w.dispose();
    expect(() => withEncoder(wider, wideWeights, pretrained)).toThrow(/conv1\/kernel \[3, 3, 3, 8\].*conv1\/kernel \[3, 3, 3, 16\]/);
    expect(() => withEncoder(spec, fresh, pretrained.slice(1))).toThrow(/has \d+ tensors/);
  });

  it('says why a spec cannot start from an encoder, and refuses the models without one', () => {
    expect(encoderSpecProblem(spec, { ...spec, options: { ...spec.options, denseUnits: 8, dropout: 0.1 }, subtypeParents: undefined })).toBeNull();
    expect(encoderSpecProblem(spec, { ...spec, kind: 'small-cnn' })).toMatch(/pretrained as a se-cnn, the model is a small-cnn/);
    expect(encoderSpecProblem(spec, { ...spec, imageSize: 32 })).toMatch(/imageSize 16.*32/);
    expect(encoderSpecProblem(spec, { ...spec, options: { width: 0.5 } })).toMatch(/batchNorm/);
    expect(encoderSpecProblem(spec, { ...spec, options: { width: 0.5, batchNorm: 1, seRatio: 2 } })).toMatch(/seUnits/);
    const head: ModelSpec = { kind: 'backbone-head', imageSize: 224, numClasses: 2, backbone: { name: 'mobilenet-v2-imagenet', cut: 'x', input: 'signed', features: 8 }, tiles: { scale: 1, views: 0 } };
    expect(encoderSpecProblem(spec, head)).toMatch(/compact CNN/);
    expect(() => encoderWeights(head, [])).toThrow(/model.kind: contrastive pretraining trains the encoder of a compact CNN/);
  });
});
