import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { fromBase64, generateBoxKeyPair, generateSigningKeyPair, identitySigner, verify } from '@histofed/crypto';
import { ModelSpec, WeightSet, encodeWeights, sha256Hex } from '@histofed/fl-core';
import { brightDarkImages, buildModelAsync, getWeights, pruneWeights, selectBackend } from '@histofed/ml';
import { DEFAULT_CHUNK_BYTES, PruningEvents, channelStatsAckSchema, channelStatsSignedBytes, chunkCount } from '@histofed/protocol';
import { Outbox } from './outbox';
import type { InputRequest, SiteData } from './site-data';
import { SiteLogger } from './site-logger';
import { SitePruning } from './site-pruning';

const RUN = '0b7e5c1a-3d2f-4e6a-8b9c-1d2e3f4a5b6c';
const spec: ModelSpec = { kind: 'se-cnn', imageSize: 24, numClasses: 2 };
const train = brightDarkImages(10, 24, 3);

beforeAll(async () => {
  await selectBackend('wasm');
});

async function weightsOf(s: ModelSpec, seed: number): Promise<WeightSet> {
  const model = await buildModelAsync(s, seed);
  const weights = getWeights(model);
  model.dispose();
  return weights;
}

function refOf(bytes: Uint8Array) {
  return { sha256: sha256Hex(bytes), totalBytes: bytes.length, chunkBytes: DEFAULT_CHUNK_BYTES, count: chunkCount(bytes.length, DEFAULT_CHUNK_BYTES) };
}

describe('the site side of federated channel pruning (issue 18)', () => {
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hf-site-pruning-'));
  });
  afterEach(() => rmSync(state, { recursive: true, force: true }));

  function site(blobs: Map<string, Uint8Array>, requests: InputRequest[] = [], images = train) {
    const keys = { box: generateBoxKeyPair(), sign: generateSigningKeyPair() };
    const data = {
      train: async (r: InputRequest) => {
        requests.push(r);
        return images;
      },
      backboneDir: undefined,
    } as unknown as SiteData;
    const fetched: string[] = [];
    const pruning = new SitePruning('site-a', data, identitySigner('site-a', keys), new Outbox(state, false), new SiteLogger('site-a'), async (ref) => {
      fetched.push(ref.sha256);
      const bytes = blobs.get(ref.sha256);
      if (!bytes) throw new Error(`blob ${ref.sha256.slice(0, 4)} is not offered`);
      return bytes;
    });
    return { pruning, keys, fetched };
  }

  it("answers the mean SE gate per channel and block over the site's training images, signed, recorded in the outbox, without leaking tensors", async () => {
    const bytes = encodeWeights(await weightsOf(spec, 4));
    const weights = refOf(bytes);
    const requests: InputRequest[] = [];
    const { pruning, keys, fetched } = site(new Map([[weights.sha256, bytes]]), requests);
    const request = { runId: RUN, round: 6, model: spec, weights, stainNormalization: { method: 'reinhard', means: [1, 2, 3], stds: [1, 1, 1] } };
    const before = tf.memory().numTensors;
    const ack = await pruning.answer(request);
    if (!ack.ok) throw new Error(ack.error);
    expect(tf.memory().numTensors).toBe(before);
    expect(channelStatsAckSchema.parse(ack)).toEqual(ack);
    expect(ack.siteId).toBe('site-a');
    expect(ack.sha256).toBe(weights.sha256);
    expect(ack.images).toBe(train.count);
    expect(ack.gates.map((g) => g.length)).toEqual([16, 32, 64]);
    ack.gates.flat().forEach((g) => {
      expect(g).toBeGreaterThanOrEqual(0);
      expect(g).toBeLessThanOrEqual(1);
    });
    expect(verify(channelStatsSignedBytes(RUN, 6, 'site-a', weights.sha256, ack.images, ack.gates), fromBase64(ack.signature), keys.sign.publicKey)).toBe(true);
    // Another round or model hash does not verify: both are signed.
    expect(verify(channelStatsSignedBytes(RUN, 7, 'site-a', weights.sha256, ack.images, ack.gates), fromBase64(ack.signature), keys.sign.publicKey)).toBe(false);
    expect(fetched).toEqual([weights.sha256]);
    // The training inputs of the request's spec and stain, as a round reads them, without augmentation.
    expect(requests).toEqual([{ spec, stain: request.stainNormalization }]);

    const outbox = readFileSync(join(state, 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(outbox.map((m) => m.event)).toEqual([PruningEvents.channelStats]);
    expect(outbox[0].payload).toEqual(JSON.parse(JSON.stringify({ runId: RUN, ...ack })));
  });

  it("answers for a pruned model with the pruned spec's channel counts", async () => {
    const pruned = pruneWeights(spec, await weightsOf(spec, 5), { 1: [0, 2, 4, 6, 8, 10, 12, 14], 2: Array.from({ length: 20 }, (_, c) => c), 3: Array.from({ length: 30 }, (_, c) => 2 * c) });
    expect(pruned.spec.options).toEqual(expect.objectContaining({ filters1: 8, filters2: 20, filters3: 30 }));
    const bytes = encodeWeights(pruned.weights);
    const weights = refOf(bytes);
    const { pruning, keys } = site(new Map([[weights.sha256, bytes]]));
    const ack = await pruning.answer({ runId: RUN, round: 11, model: pruned.spec, weights });
    if (!ack.ok) throw new Error(ack.error);
    expect(ack.gates.map((g) => g.length)).toEqual([8, 20, 30]);
    expect(verify(channelStatsSignedBytes(RUN, 11, 'site-a', weights.sha256, ack.images, ack.gates), fromBase64(ack.signature), keys.sign.publicKey)).toBe(true);
  });

  it('refuses a model without SE gates, an invalid request, a model whose bytes are not the named ones and a site without training images', async () => {
    const small: ModelSpec = { ...spec, kind: 'small-cnn' };
    const smallBytes = encodeWeights(await weightsOf(small, 1));
    const seBytes = encodeWeights(await weightsOf(spec, 2));
    const { pruning, fetched } = site(new Map([[sha256Hex(smallBytes), smallBytes], [sha256Hex(seBytes), seBytes]]));
    expect(await pruning.answer({ runId: RUN, round: 3, model: small, weights: refOf(smallBytes) })).toEqual({
      ok: false,
      code: 'invalid-message',
      error: 'channel statistics of site site-a: a small-cnn has no SE gates',
    });
    expect(fetched).toEqual([]); // refused before any download

    expect(await pruning.answer({ runId: RUN, round: 0, model: spec, weights: refOf(seBytes) })).toEqual({
      ok: false,
      code: 'invalid-message',
      error: expect.stringMatching(/^coordinator:channel-stats: round/),
    });

    // The fetcher hands back other bytes than the BlobRef names: refused, nothing signed.
    const forged = new Map([[sha256Hex(seBytes), smallBytes]]);
    const other = site(forged);
    const mismatch = await other.pruning.answer({ runId: RUN, round: 3, model: spec, weights: refOf(seBytes) });
    expect(mismatch).toEqual({ ok: false, code: 'internal-error', error: expect.stringMatching(/^channel statistics of site site-a: the model's bytes have SHA-256 [0-9a-f]{64}, the request names/) });

    const missing = await pruning.answer({ runId: RUN, round: 3, model: spec, weights: { ...refOf(seBytes), sha256: 'f'.repeat(64) } });
    expect(missing).toEqual({ ok: false, code: 'internal-error', error: 'channel statistics of site site-a: blob ffff is not offered' });

    const empty = site(new Map([[sha256Hex(seBytes), seBytes]]), [], { ...train, images: new Float32Array(0), labels: new Int32Array(0), count: 0, groups: [] });
    expect(await empty.pruning.answer({ runId: RUN, round: 3, model: spec, weights: refOf(seBytes) })).toEqual({
      ok: false,
      code: 'internal-error',
      error: 'channel statistics of site site-a: the site has no training images',
    });
    expect(empty.fetched).toEqual([]);

    const outbox = (() => {
      try {
        return readFileSync(join(state, 'outbox', 'messages.jsonl'), 'utf8');
      } catch {
        return '';
      }
    })();
    expect(outbox).toBe(''); // refusals are not recorded as sent statistics
  });
});
