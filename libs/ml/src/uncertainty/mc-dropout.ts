/**
 * Monte Carlo dropout (Gal & Ghahramani 2016): N forward passes with the Dropout layers drawing
 * masks, everything else in inference mode. `predict(x, {training: true})` is not that: it also puts
 * batch normalization in training mode (normalizing by the batch's own statistics, so an image's
 * output would depend on which images share its batch). Instead, for the duration of one
 * synchronous `predict`, each Dropout layer's `call` is replaced by a multiplication with a mask we
 * draw ourselves, and put back before anything else can run.
 *
 * The mask of row r in pass p at dropout layer l comes from a PRNG seeded by (seed, p, l, r): the
 * same seed gives the same outputs, whatever the batch size (a row's mask does not depend on its
 * batch), and passes differ from each other.
 */
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { z } from 'zod';
import { ValidationError } from '@histofed/fl-core';
import { assertBackendReady } from '../backend';
import { checkImages, imageBatch } from '../batches';
import { mixSeed, mulberry32 } from '../random';

/** Layer classes whose training-mode behaviour is a dropout mask (SpatialDropout1D: one per channel). */
const DROPOUT_CLASSES: ReadonlySet<string> = new Set(['Dropout', 'SpatialDropout1D']);

type LayerCall = (inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>) => tf.Tensor | tf.Tensor[];

/** What we use of tfjs-layers' Dropout (its fields are public in the JS, not all in the typings). */
interface DropoutLayer {
  readonly name: string;
  readonly rate: number;
  getNoiseShape(input: tf.Tensor): number[] | null;
  call: LayerCall;
}

function collect(layers: readonly tfl.layers.Layer[], out: Set<DropoutLayer>): void {
  for (const layer of layers) {
    // A nested model (functional or Sequential) used as a layer: its own layers run inside it.
    const nested = (layer as unknown as { layers?: tfl.layers.Layer[] }).layers;
    if (Array.isArray(nested)) {
      collect(nested, out);
      continue;
    }
    const d = layer as unknown as DropoutLayer;
    if (DROPOUT_CLASSES.has(layer.getClassName()) && d.rate > 0 && d.rate < 1) out.add(d);
  }
}

/** The model's Dropout layers that drop something (rate in (0, 1)), nested models included, in layer order. */
function dropoutLayers(model: tfl.LayersModel): DropoutLayer[] {
  const out = new Set<DropoutLayer>();
  collect(model.layers, out);
  return [...out];
}

/** True when the model has a Dropout layer with a rate in (0, 1): MC dropout has something to sample. */
export function hasDropout(model: tfl.LayersModel): boolean {
  return dropoutLayers(model).length > 0;
}

const optionsSchema = z
  .object({
    passes: z.number().int().min(1).max(1024),
    seed: z.number().int().min(0).max(0xffffffff),
    batchSize: z.number().int().min(1).max(1 << 16).optional(),
  })
  .strict();

export type McDropoutOptions = z.input<typeof optionsSchema>;

/** Default rows per forward pass (heads on tile features: small rows, large batches are cheap). */
const DEFAULT_BATCH = 256;

/** Inverted-dropout mask values (0 or 1 / (1 - rate)) of `n` rows of `per` values from row `start`. */
function maskValues(seed: number, pass: number, layer: number, start: number, n: number, per: number, rate: number): Float32Array {
  const out = new Float32Array(n * per);
  const keep = 1 / (1 - rate);
  const base = mixSeed(mixSeed(seed, pass), layer);
  for (let i = 0; i < n; i++) {
    const rand = mulberry32(mixSeed(base, start + i));
    for (let j = 0; j < per; j++) out[i * per + j] = rand() < rate ? 0 : keep;
  }
  return out;
}

/**
 * Runs `run` (synchronous) with each dropout layer applying its seeded mask for rows from `start`
 * in pass `pass`; the layers' own `call` is restored before returning, even on a throw.
 */
function withMasks<T>(layers: readonly DropoutLayer[], seed: number, pass: number, start: number, run: () => T): T {
  const saved = layers.map((l) => (Object.prototype.hasOwnProperty.call(l, 'call') ? l.call : undefined));
  layers.forEach((layer, index) => {
    layer.call = (inputs) =>
      tf.tidy(() => {
        const x = Array.isArray(inputs) ? inputs[0] : inputs;
        const noise = layer.getNoiseShape(x) ?? x.shape;
        if (noise[0] !== x.shape[0]) throw new ValidationError(`mcDropoutPasses: layer ${layer.name}: a noise shape shared across the batch is not supported`);
        const per = noise.slice(1).reduce((a, b) => a * b, 1);
        const mask = tf.tensor(maskValues(seed, pass, index, start, x.shape[0], per, layer.rate), noise);
        return tf.mul(x, mask);
      });
  });
  try {
    return run();
  } finally {
    layers.forEach((layer, i) => {
      const own = saved[i];
      if (own === undefined) delete (layer as Partial<DropoutLayer>).call;
      else layer.call = own;
    });
  }
}

/**
 * `passes` outputs (each count x output width, row-major) of `model` on `count` rows of `rowShape`
 * with dropout active and everything else in inference mode (see the file comment). Yields to the
 * event loop between mini-batches; disposes every tensor it makes. Throws a ValidationError for a
 * model without dropout (every pass would be the same), bad options or rows that do not fit.
 */
export async function mcDropoutPasses(
  model: tfl.LayersModel,
  rows: Float32Array,
  count: number,
  rowShape: readonly number[],
  options: McDropoutOptions,
): Promise<Float32Array[]> {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new ValidationError(`mcDropoutPasses: options.${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  const o = parsed.data;
  assertBackendReady();
  const layers = dropoutLayers(model);
  if (layers.length === 0) {
    throw new ValidationError(
      'mcDropoutPasses: the model has no Dropout layer with a rate in (0, 1), so every pass would be the same ' +
        "(a model's heads have one when its spec's options.dropout > 0)",
    );
  }
  if (model.inputs.length !== 1 || model.outputs.length !== 1) throw new ValidationError('mcDropoutPasses: the model must have one input and one output');
  const inputShape = model.inputs[0].shape.slice(1);
  if (inputShape.join() !== rowShape.join()) throw new ValidationError(`mcDropoutPasses: rowShape: the model takes rows of ${inputShape.join('x')}, got ${rowShape.join('x')}`);
  checkImages(rows, count, rowShape, 'rows');
  const width = model.outputs[0].shape[model.outputs[0].shape.length - 1];
  if (typeof width !== 'number' || model.outputs[0].shape.length !== 2) throw new ValidationError('mcDropoutPasses: the model must output rows of a fixed width');
  const out = Array.from({ length: o.passes }, () => new Float32Array(count * width));
  const batch = o.batchSize ?? DEFAULT_BATCH;
  for (let start = 0; start < count; start += batch) {
    const end = Math.min(count, start + batch);
    const x = imageBatch(rows, rowShape, start, end);
    try {
      for (let p = 0; p < o.passes; p++) {
        const y = withMasks(layers, o.seed, p, start, () => tf.tidy(() => model.predict(x, { batchSize: end - start }) as tf.Tensor));
        try {
          out[p].set(y.dataSync() as Float32Array, start * width);
        } finally {
          y.dispose();
        }
      }
    } finally {
      x.dispose();
    }
    if (end < count) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return out;
}
