import { namedTensor } from '@histofed/fl-core';
import { randomUUID } from 'node:crypto';
import { sealedUpdateSchema, siteHelloSchema, trainTaskSchema } from './messages';
import { decodeUpdateEnvelope, encodeUpdateEnvelope } from './update-envelope';
import { parseMessage, validateMessage } from './validate';

const key = Buffer.alloc(32, 7).toString('base64');
const hello = {
  protocolVersion: 2,
  siteId: 'hospital-a',
  boxPublicKey: key,
  signPublicKey: key,
  signature: Buffer.alloc(64, 1).toString('base64'),
  backend: 'wasm',
  software: 'histofed-site 0.1.0',
  trainSamples: 10,
  validationSamples: 2,
};

describe('message validation', () => {
  it('accepts a well-formed hello', () => {
    expect(validateMessage(siteHelloSchema, hello, 'hello')).toEqual({ ok: true, value: hello });
  });

  it('names the field that is wrong', () => {
    const bad = validateMessage(siteHelloSchema, { ...hello, boxPublicKey: 'AAAA', siteId: 'Bad Id!' }, 'hello');
    expect(bad.ok).toBe(false);
    if (!bad.ok) {
      expect(bad.reason).toMatch(/^hello: /);
      expect(bad.reason).toMatch(/siteId: site id must be/);
      expect(bad.reason).toMatch(/boxPublicKey: must encode exactly 32 bytes/);
    }
  });

  it('rejects non-objects and updates that do not name a valid upload', () => {
    expect(validateMessage(sealedUpdateSchema, 'hello', 'update').ok).toBe(false);
    const update = {
      runId: randomUUID(),
      round: 1,
      kind: 'round',
      siteId: 'a',
      nonce: Buffer.alloc(24).toString('base64'),
      uploadId: 'not-a-uuid',
      sealedSha256: 'A'.repeat(64),
      sealedBytes: 10,
      signature: Buffer.alloc(64).toString('base64'),
    };
    const r = validateMessage(sealedUpdateSchema, update, 'update');
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toMatch(/uploadId: /);
      expect(r.reason).toMatch(/sealedSha256: must be a sha256/);
    }
    expect(() => parseMessage(sealedUpdateSchema, { ...update, uploadId: randomUUID(), sealedSha256: 'a'.repeat(64) }, 'update')).not.toThrow();
  });

  it('a train task names its model by hash and the chunked blob must be that model', () => {
    const task = {
      kind: 'round',
      modelHash: 'a'.repeat(64),
      model: { sha256: 'a'.repeat(64), totalBytes: 10, chunkBytes: 4, count: 3 },
      config: {
        runId: randomUUID(),
        round: 1,
        model: { kind: 'small-cnn', imageSize: 32, numClasses: 2 },
        localEpochs: 1,
        batchSize: 8,
        learningRate: 0.001,
        proximalMu: 0.01,
        seed: 1,
      },
    };
    expect(parseMessage(trainTaskSchema, task, 'train').model.count).toBe(3);
    expect(validateMessage(trainTaskSchema, { ...task, model: { ...task.model, sha256: 'b'.repeat(64) } }, 'train')).toEqual({
      ok: false,
      reason: expect.stringMatching(/model\.sha256: model\.sha256 must equal modelHash/),
    });
    expect(validateMessage(trainTaskSchema, { ...task, model: { ...task.model, count: 2 } }, 'train').ok).toBe(false);
    // A boosted member's round (issue 16) names the ensemble whose errors weigh the images — and only such a task does.
    const boosting = { members: [{ sha256: 'c'.repeat(64), totalBytes: 10, chunkBytes: 4, count: 3 }], strength: 2, maxRatio: 20 };
    expect(parseMessage(trainTaskSchema, { ...task, kind: 'boost', boosting }, 'train').boosting).toEqual(boosting);
    expect(validateMessage(trainTaskSchema, { ...task, kind: 'boost' }, 'train')).toEqual({ ok: false, reason: expect.stringMatching(/boosting: a 'boost' task/) });
    expect(validateMessage(trainTaskSchema, { ...task, boosting }, 'train').ok).toBe(false);
    expect(validateMessage(trainTaskSchema, { ...task, kind: 'boost', boosting: { ...boosting, members: [boosting.members[0], boosting.members[0]] } }, 'train').ok).toBe(false);
    expect(validateMessage(trainTaskSchema, { ...task, kind: 'boost', boosting: { ...boosting, strength: 11 } }, 'train').ok).toBe(false);
  });
});

describe('update envelope', () => {
  const header = {
    runId: randomUUID(),
    round: 2,
    kind: 'round' as const,
    siteId: 'hospital-b',
    baseModelHash: 'f'.repeat(64),
    numSamples: 42,
    metrics: { accuracy: 0.75, loss: 0.5 },
  };

  it('round-trips header and weights', () => {
    const weights = [namedTensor('w', [2], [1.5, -2])];
    const decoded = decodeUpdateEnvelope(encodeUpdateEnvelope({ header, weights }));
    expect(decoded.header).toEqual(header);
    expect(Array.from(decoded.weights[0].values)).toEqual([1.5, -2]);
  });

  it('refuses extra header fields: only ids, counts and metrics may leave a site', () => {
    const weights = [namedTensor('w', [1], [1])];
    expect(() =>
      encodeUpdateEnvelope({ header: { ...header, files: ['SOB_B_A-14-22549AB-40-001.png'] } as never, weights }),
    ).toThrow();
  });

  it('rejects a corrupted envelope with a reason', () => {
    const bytes = encodeUpdateEnvelope({ header, weights: [namedTensor('w', [1], [1])] });
    expect(() => decodeUpdateEnvelope(bytes.subarray(0, 10), 'update from hospital-b')).toThrow(
      /update from hospital-b: header runs past the end/,
    );
  });
});
