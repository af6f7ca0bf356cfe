/**
 * Where a backbone's topology and weights come from, and its content hash.
 *
 * - `mobilenet-v2-imagenet`: the Keras MobileNetV2 (alpha 1.0, 224x224) that the npm package
 *   nsfwjs@4.4.0 (MIT) ships as a tfjs Layers model, read offline through
 *   `require('nsfwjs/models/mobilenet_v2')`. Its layers `Conv1` ... `block_10_project_BN` are marked
 *   non-trainable in its topology: they hold the original Keras ImageNet weights, quantized to
 *   uint8 (per-tensor min/scale) by the tfjs converter; blocks 11-16 and `Conv_1` were re-trained by
 *   nsfwjs on an unrelated task (NSFW image classes), so HistoFed's default cut stays at block 10.
 * - `layers-model`: any tfjs Layers model directory (model.json + weight shards), e.g. a Keras
 *   application converted with tensorflowjs_converter, for sites that can obtain one.
 *
 * The hash is the SHA-256 of the canonical model JSON (topology and weight manifest) followed by
 * the weight bytes as stored: two sites with the same files get the same hash whatever the paths.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs-core';
import { BACKBONE_NAMES, ValidationError, type BackboneName } from '@histofed/fl-core';

export const MOBILENET_V2_IMAGENET = 'mobilenet-v2-imagenet' satisfies BackboneName;
export const LAYERS_MODEL_BACKBONE = 'layers-model' satisfies BackboneName;

/** The files of a backbone, as tfjs reads them. */
export interface BackboneSource {
  readonly name: string;
  /** Where it was read from (for messages). */
  readonly origin: string;
  readonly json: tf.io.ModelJSON;
  readonly weightSpecs: tf.io.WeightsManifestEntry[];
  readonly weightData: ArrayBuffer;
  readonly sha256: string;
}

function sourceHash(json: tf.io.ModelJSON, weightData: ArrayBuffer): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ modelTopology: json.modelTopology, weightsManifest: json.weightsManifest }));
  h.update(new Uint8Array(weightData));
  return h.digest('hex');
}

function exactBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

interface EsModule<T> {
  readonly default?: T;
}

function unwrap<T>(m: T | EsModule<T>): T {
  return (m as EsModule<T>).default ?? (m as T);
}

let mobilenet: Promise<BackboneSource> | null = null;

/** The MobileNetV2 of nsfwjs@4.4.0 (read once per process). */
export function mobilenetV2Source(): Promise<BackboneSource> {
  mobilenet ??= (async () => {
    let mod: { MobileNetV2Model: { modelJson(): Promise<unknown>; weightBundles: (() => Promise<unknown>)[] } };
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      mod = require('nsfwjs/models/mobilenet_v2');
    } catch (e) {
      throw new ValidationError(
        `backbone ${MOBILENET_V2_IMAGENET}: the npm package nsfwjs@4.4.0 is missing (${(e as Error).message}); run npm ci`,
      );
    }
    const json = unwrap((await mod.MobileNetV2Model.modelJson()) as tf.io.ModelJSON);
    const bundles = await Promise.all(mod.MobileNetV2Model.weightBundles.map((b) => b()));
    const bytes = bundles.map((b) => Buffer.from(unwrap(b as string), 'base64'));
    const weightData = exactBuffer(Buffer.concat(bytes));
    const weightSpecs = json.weightsManifest.flatMap((g) => g.weights);
    return { name: MOBILENET_V2_IMAGENET, origin: 'nsfwjs@4.4.0 models/mobilenet_v2', json, weightSpecs, weightData, sha256: sourceHash(json, weightData) };
  })();
  mobilenet.catch(() => (mobilenet = null));
  return mobilenet;
}

/** A tfjs Layers model directory (model.json and the weight files its manifest lists). */
export async function layersModelDirSource(dir: string, what = '--backbone'): Promise<BackboneSource> {
  const file = path.join(dir, 'model.json');
  if (!existsSync(file)) throw new ValidationError(`${what} ${dir}: model.json is missing (expected a tfjs Layers model directory)`);
  let json: tf.io.ModelJSON;
  try {
    json = JSON.parse(await readFile(file, 'utf8')) as tf.io.ModelJSON;
  } catch (e) {
    throw new ValidationError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (json.modelTopology === undefined || json.format === 'graph-model') {
    throw new ValidationError(`${file}: not a tfjs Layers model (a graph model has no layers to cut)`);
  }
  const groups = json.weightsManifest ?? [];
  const buffers: Buffer[] = [];
  for (const g of groups) {
    for (const p of g.paths) {
      const f = path.resolve(dir, p);
      if (!f.startsWith(path.resolve(dir) + path.sep)) throw new ValidationError(`${file}: weight path ${p} leaves the model directory`);
      if (!existsSync(f)) throw new ValidationError(`${file}: weight file ${p} is missing`);
      buffers.push(await readFile(f));
    }
  }
  const weightData = exactBuffer(Buffer.concat(buffers));
  return {
    name: LAYERS_MODEL_BACKBONE,
    origin: path.resolve(dir),
    json,
    weightSpecs: groups.flatMap((g) => g.weights),
    weightData,
    sha256: sourceHash(json, weightData),
  };
}

/** The source a backbone spec names: the built-in MobileNetV2, or the directory a site gives for 'layers-model'. */
export async function backboneSource(name: string, dir?: string): Promise<BackboneSource> {
  if (name === MOBILENET_V2_IMAGENET) return mobilenetV2Source();
  if (name === LAYERS_MODEL_BACKBONE) {
    if (dir === undefined) {
      throw new ValidationError(`backbone ${LAYERS_MODEL_BACKBONE}: this process has no backbone directory (give it with --backbone DIR)`);
    }
    return layersModelDirSource(dir);
  }
  throw new ValidationError(`model.backbone.name: unknown backbone "${name}" (known: ${BACKBONE_NAMES.join(', ')})`);
}
