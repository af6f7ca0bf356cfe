/**
 * A saved HistoFed model: a directory holding a tfjs Layers model (`model.json` + `weights.bin`,
 * the standard tfjs layout, loadable by any tfjs) and `histofed-model.json`, a manifest with the
 * classes, the input size, the preprocessing and the training provenance.
 *
 * Files are written with node fs through custom tfjs IO handlers (tfjs-node's file:// handler is
 * not used, so this works on the wasm and cpu backends). Weight names are the layer-scoped names of
 * weights-bridge.ts ('conv1/kernel'), so a loaded model accepts federated weight sets.
 */
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { z } from 'zod';
import type { ClinicalSchema, ModelSpec } from '@histofed/fl-core';
import { BACKBONE_NAMES, ValidationError, validateClinicalSchema } from '@histofed/fl-core';
import { assertBackendReady, currentBackend } from './backend';
import { composeTileClassifier } from './backbones/tile-classifier';
import { describeModel, featureInputShape, savesTrainedPartOnly } from './models';
import { calibrationSchema, reviewRuleSchema, type ModelReading } from './inference/model-metadata';

export const SAVED_MODEL_FORMAT = 'histofed-model';
export const SAVED_MODEL_FORMAT_VERSION = 1;
export const SAVED_MODEL_SOFTWARE = 'histofed 0.1.0';
export const MODEL_JSON_FILE = 'model.json';
export const WEIGHTS_FILE = 'weights.bin';
export const MANIFEST_FILE = 'histofed-model.json';

const modelSpecSchema = z.object({
  kind: z.string().min(1),
  imageSize: z.number().int().positive(),
  numClasses: z.number().int().min(2),
  options: z.record(z.string(), z.number()).optional(),
  subtypeParents: z.array(z.number().int().nonnegative()).optional(),
  /**
   * The backbone whose layers the saved tile classifier contains (its source's hash, cut, scaling);
   * for a bag model (attention-mil, transformer-mil), the one whose tile features it reads, which
   * the consumer loads locally and checks by the hash.
   */
  backbone: z
    .object({
      name: z.enum(BACKBONE_NAMES),
      sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
      cut: z.string().min(1),
      input: z.enum(['unit', 'signed']),
      features: z.number().int().positive().optional(),
      trainFrom: z.string().min(1).optional(),
    })
    .optional(),
  tiles: z.object({ scale: z.number().positive(), views: z.number().int().nonnegative() }).optional(),
  /** A fusion model's declared clinical columns (fl-core ClinicalSchema): predict encodes a patient's record by them. */
  clinical: z
    .custom<ClinicalSchema>()
    .superRefine((v, ctx) => {
      try {
        validateClinicalSchema(v, 'spec.clinical');
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
      }
    })
    .optional(),
});

const preprocessingSchema = z.object({
  /** Pixel values divided by 255. */
  scale: z.literal('0-1'),
  /**
   * 'cover': the image scaled so the shorter side fits, then centre-cropped to a square; 'tiles':
   * the image scaled by `tiles.scale` and read as the covering grid of square tiles of the input
   * size (image = mean of its tiles' outputs).
   */
  resize: z.enum(['cover', 'tiles']),
  /** With resize 'tiles': the tile geometry. */
  tiles: z.object({ size: z.number().int().positive(), scale: z.number().positive(), grid: z.literal('cover') }).optional(),
  /** The stain-normalization target applied before the model, or null for none. */
  stainNormalization: z.record(z.string(), z.unknown()).nullable(),
});

const provenanceSchema = z.object({
  createdAt: z.string().min(1),
  runId: z.string().optional(),
  round: z.number().int().nonnegative().optional(),
  sites: z.array(z.string()).optional(),
  kind: z.enum(['global', 'site', 'local', 'centralized']),
  /** The model whose convolutional base this one started from (transfer learning). */
  initFrom: z.string().optional(),
  backend: z.string().min(1),
});

const manifestSchema = z.object({
  format: z.literal(SAVED_MODEL_FORMAT),
  formatVersion: z.literal(SAVED_MODEL_FORMAT_VERSION),
  software: z.string(),
  classes: z.array(z.string().min(1)).min(2),
  /** Two-stage models: the subtype classes, in the order of the subtype head (spec.subtypeParents gives each one's class). */
  subtypeClasses: z.array(z.string().min(1)).min(2).optional(),
  inputSize: z.number().int().positive(),
  spec: modelSpecSchema,
  preprocessing: preprocessingSchema,
  provenance: provenanceSchema,
  parameters: z.number().int().nonnegative(),
  /** How to read the outputs (issue 15): temperature scaling and the review rule, when fitted. */
  calibration: calibrationSchema.optional(),
  review: reviewRuleSchema.optional(),
});

export type SavedModelPreprocessing = z.infer<typeof preprocessingSchema>;
export type SavedModelProvenance = z.infer<typeof provenanceSchema>;
export type SavedModelManifest = z.infer<typeof manifestSchema>;

export const DEFAULT_PREPROCESSING: SavedModelPreprocessing = {
  scale: '0-1',
  resize: 'cover',
  stainNormalization: null,
};

/** The preprocessing a spec implies (tiles or the centre square), with a stain target. */
export function preprocessingFor(spec: ModelSpec, stainNormalization: Record<string, unknown> | null = null): SavedModelPreprocessing {
  return spec.tiles
    ? { scale: '0-1', resize: 'tiles', tiles: { size: spec.imageSize, scale: spec.tiles.scale, grid: 'cover' }, stainNormalization }
    : { scale: '0-1', resize: 'cover', stainNormalization };
}

/** What the caller says about a model; the rest of the manifest is derived or defaulted. */
export interface SavedModelFields {
  readonly classes: readonly string[];
  /** Required for a two-stage spec: one name per subtype. */
  readonly subtypeClasses?: readonly string[];
  readonly spec: ModelSpec;
  /**
   * A backbone spec's frozen part (tileFeatureModel, or the extractor of a loaded model): it is
   * saved in front of the trained model, as one tile classifier. Required when spec.backbone is set.
   */
  readonly featureModel?: tfl.LayersModel;
  /** Defaults to preprocessingFor(spec). */
  readonly preprocessing?: SavedModelPreprocessing;
  readonly provenance: {
    readonly kind: SavedModelProvenance['kind'];
    readonly runId?: string;
    readonly round?: number;
    readonly sites?: readonly string[];
    /** Defaults to now (ISO 8601). */
    readonly createdAt?: string;
    /** Defaults to the current backend's name. */
    readonly backend?: string;
    readonly initFrom?: string;
  };
  readonly calibration?: ModelReading['calibration'];
  readonly review?: ModelReading['review'];
}

export interface LoadedModel {
  readonly model: tfl.LayersModel;
  readonly manifest: SavedModelManifest;
}

export interface LoadModelExpectations {
  /** The input size (pixels) the caller will feed; a model for another size is refused. */
  readonly inputSize?: number;
}

/** [height, width, channels] of a single-input image model, or null when the shape is other. */
function inputShapeOf(model: tfl.LayersModel): number[] | null {
  if (model.inputs.length !== 1) return null;
  const shape = model.inputs[0].shape;
  if (shape.length < 2) return null;
  return shape.slice(1).map((d) => (d === null ? -1 : d));
}

function outputUnitsOf(model: tfl.LayersModel): number | null {
  if (model.outputs.length !== 1) return null;
  const shape = model.outputs[0].shape;
  const last = shape[shape.length - 1];
  return shape.length === 2 && last !== null ? last : null;
}

/** The input of a saved trained part: [bagTiles, features + 3], or [features + clinicalWidth] (the spec names its backbone's features). */
function trainedPartInputShape(spec: ModelSpec): number[] {
  try {
    return featureInputShape(spec) ?? [];
  } catch {
    return [];
  }
}

/** Checks that the model, the manifest and each other agree; `where` prefixes the messages. */
function checkConsistency(where: string, model: tfl.LayersModel, m: SavedModelManifest): void {
  if (m.spec.imageSize !== m.inputSize) {
    throw new ValidationError(`${where}: spec.imageSize ${m.spec.imageSize} differs from inputSize ${m.inputSize}`);
  }
  const t = m.preprocessing.tiles;
  if ((m.preprocessing.resize === 'tiles') !== (m.spec.tiles !== undefined) || (m.spec.tiles && (!t || t.size !== m.inputSize || t.scale !== m.spec.tiles.scale))) {
    throw new ValidationError(`${where}: preprocessing ${JSON.stringify(m.preprocessing.resize)} / tiles ${JSON.stringify(t ?? null)} disagree with the spec's tiles ${JSON.stringify(m.spec.tiles ?? null)}`);
  }
  if (m.spec.numClasses !== m.classes.length) {
    throw new ValidationError(
      `${where}: spec.numClasses ${m.spec.numClasses} differs from the ${m.classes.length} classes [${m.classes.join(', ')}]`,
    );
  }
  if (new Set(m.classes).size !== m.classes.length) {
    throw new ValidationError(`${where}: classes must be distinct, got [${m.classes.join(', ')}]`);
  }
  const input = inputShapeOf(model);
  const expectedInput = savesTrainedPartOnly(m.spec) ? trainedPartInputShape(m.spec) : [m.inputSize, m.inputSize, 3];
  if (input === null || input.join() !== expectedInput.join()) {
    throw new ValidationError(
      `${where}: the tfjs model takes input [${input?.join(', ') ?? 'not one image tensor'}], the manifest says [${expectedInput.join(', ')}]`,
    );
  }
  const subtypes = m.spec.subtypeParents?.length ?? 0;
  if ((m.subtypeClasses?.length ?? 0) !== subtypes) {
    throw new ValidationError(
      `${where}: spec.subtypeParents has ${subtypes} subtypes, subtypeClasses lists ${m.subtypeClasses?.length ?? 0}`,
    );
  }
  if (m.subtypeClasses !== undefined && new Set(m.subtypeClasses).size !== m.subtypeClasses.length) {
    throw new ValidationError(`${where}: subtypeClasses must be distinct, got [${m.subtypeClasses.join(', ')}]`);
  }
  const units = outputUnitsOf(model);
  if (units !== m.classes.length + subtypes) {
    throw new ValidationError(
      `${where}: the tfjs model outputs ${units ?? 'not one vector'} values per image, the manifest lists ${m.classes.length} classes` +
        (subtypes > 0 ? ` + ${subtypes} subtypes` : ''),
    );
  }
}

function issuesText(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

/** Writes through a temporary file and a rename, so a reader never sees half a file. */
async function writeAtomically(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, file);
}

/**
 * Saves `model` into `dir` (created if needed; the three files are replaced) with its manifest.
 * Returns the manifest written. Throws a ValidationError when the fields disagree with the model
 * (input size, number of classes).
 */
export async function saveModel(dir: string, trained: tfl.LayersModel, fields: SavedModelFields): Promise<SavedModelManifest> {
  assertBackendReady();
  // A bag or fusion model is saved as its trained part: its input is not a tile (a bag of tile
  // features, or features with a clinical record); the consumer computes the tile features with its
  // own copy of the backbone (checked against spec.backbone.sha256).
  const partOnly = savesTrainedPartOnly(fields.spec);
  if (fields.spec.backbone !== undefined && !partOnly && fields.featureModel === undefined) {
    throw new ValidationError(`saveModel ${dir}: a backbone model needs its feature model (fields.featureModel) to be saved as one tile classifier`);
  }
  // The composed model shares every layer with the two parts: it is not disposed here.
  const model = fields.featureModel && !partOnly ? composeTileClassifier(fields.featureModel, trained) : trained;
  const candidate = {
    format: SAVED_MODEL_FORMAT,
    formatVersion: SAVED_MODEL_FORMAT_VERSION,
    software: SAVED_MODEL_SOFTWARE,
    classes: [...fields.classes],
    ...(fields.subtypeClasses !== undefined ? { subtypeClasses: [...fields.subtypeClasses] } : {}),
    inputSize: fields.spec.imageSize,
    spec: {
      ...fields.spec,
      ...(fields.spec.options ? { options: { ...fields.spec.options } } : {}),
      ...(fields.spec.subtypeParents ? { subtypeParents: [...fields.spec.subtypeParents] } : {}),
    },
    preprocessing: fields.preprocessing ?? preprocessingFor(fields.spec),
    provenance: {
      createdAt: fields.provenance.createdAt ?? new Date().toISOString(),
      kind: fields.provenance.kind,
      backend: fields.provenance.backend ?? currentBackend()?.name ?? tf.getBackend(),
      ...(fields.provenance.runId !== undefined ? { runId: fields.provenance.runId } : {}),
      ...(fields.provenance.round !== undefined ? { round: fields.provenance.round } : {}),
      ...(fields.provenance.sites !== undefined ? { sites: [...fields.provenance.sites] } : {}),
      ...(fields.provenance.initFrom !== undefined ? { initFrom: fields.provenance.initFrom } : {}),
    },
    parameters: describeModel(model).parameters,
    ...(fields.calibration ? { calibration: fields.calibration } : {}),
    ...(fields.review ? { review: fields.review } : {}),
  };
  const parsed = manifestSchema.safeParse(candidate);
  if (!parsed.success) throw new ValidationError(`saveModel ${dir}: invalid manifest fields: ${issuesText(parsed.error)}`);
  const manifest = parsed.data;
  checkConsistency(`saveModel ${dir}`, model, manifest);

  await mkdir(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      if (artifacts.weightSpecs === undefined || artifacts.weightData === undefined) {
        throw new ValidationError(`saveModel ${dir}: tfjs produced no weights`);
      }
      const weights = new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData));
      if (artifacts.modelTopology === undefined || artifacts.modelTopology instanceof ArrayBuffer) {
        throw new ValidationError(`saveModel ${dir}: tfjs produced no JSON model topology`);
      }
      const modelJson: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: [`./${WEIGHTS_FILE}`], weights: artifacts.weightSpecs }],
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy ?? 'TensorFlow.js',
        convertedBy: SAVED_MODEL_SOFTWARE,
        ...(artifacts.trainingConfig !== undefined ? { trainingConfig: artifacts.trainingConfig } : {}),
      };
      await writeAtomically(path.join(dir, WEIGHTS_FILE), weights);
      await writeAtomically(path.join(dir, MODEL_JSON_FILE), JSON.stringify(modelJson));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  // The manifest last: a directory with a manifest has complete model files.
  await writeAtomically(path.join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

const BYTES_PER_DTYPE: Readonly<Record<string, number>> = { float32: 4, int32: 4, bool: 1, complex64: 8 };

async function readJson(file: string): Promise<unknown> {
  const text = await readFile(file, 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new ValidationError(`${file}: not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
}

/** Reads and validates the manifest of a saved model directory, without loading the model. */
export async function readModelManifest(dir: string): Promise<SavedModelManifest> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new ValidationError(`saved model ${dir}: no such directory`);
  }
  const file = path.join(dir, MANIFEST_FILE);
  if (!existsSync(file)) {
    throw new ValidationError(
      `saved model ${dir}: ${MANIFEST_FILE} is missing (a HistoFed model directory holds ${MODEL_JSON_FILE}, ${WEIGHTS_FILE} and ${MANIFEST_FILE})`,
    );
  }
  const raw = await readJson(file);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ValidationError(`${file}: expected a JSON object`);
  }
  const r = raw as Record<string, unknown>;
  if (r['format'] !== SAVED_MODEL_FORMAT) {
    throw new ValidationError(`${file}: format is ${JSON.stringify(r['format'])}, expected "${SAVED_MODEL_FORMAT}"`);
  }
  if (r['formatVersion'] !== SAVED_MODEL_FORMAT_VERSION) {
    throw new ValidationError(
      `${file}: formatVersion ${JSON.stringify(r['formatVersion'])} (written by ${JSON.stringify(r['software'] ?? 'unknown software')}) is not supported; ${SAVED_MODEL_SOFTWARE} reads formatVersion ${SAVED_MODEL_FORMAT_VERSION}`,
    );
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) throw new ValidationError(`${file}: invalid manifest: ${issuesText(parsed.error)}`);
  return parsed.data;
}

/**
 * Loads a saved model directory. Throws a ValidationError naming the directory or file when a file
 * is missing or malformed, the manifest has another format or version, the model and manifest
 * disagree, or `expect.inputSize` differs from the model's input size. The caller owns the model.
 */
export async function loadModel(dir: string, expect: LoadModelExpectations = {}): Promise<LoadedModel> {
  assertBackendReady();
  const manifest = await readModelManifest(dir);
  if (expect.inputSize !== undefined && expect.inputSize !== manifest.inputSize) {
    throw new ValidationError(
      `saved model ${dir}: made for ${manifest.inputSize} px input, expected ${expect.inputSize} px (use --image-size ${manifest.inputSize} or another model)`,
    );
  }
  const modelFile = path.join(dir, MODEL_JSON_FILE);
  const weightsFile = path.join(dir, WEIGHTS_FILE);
  for (const f of [modelFile, weightsFile]) {
    if (!existsSync(f)) throw new ValidationError(`saved model ${dir}: ${path.basename(f)} is missing`);
  }
  const modelJson = (await readJson(modelFile)) as Partial<tf.io.ModelJSON>;
  if (typeof modelJson !== 'object' || modelJson === null || modelJson.modelTopology === undefined) {
    throw new ValidationError(`${modelFile}: not a tfjs Layers model (no modelTopology)`);
  }
  const groups = modelJson.weightsManifest;
  if (!Array.isArray(groups) || groups.length !== 1 || groups[0].paths.length !== 1 ||
      path.basename(groups[0].paths[0]) !== WEIGHTS_FILE) {
    throw new ValidationError(`${modelFile}: weightsManifest must reference the single file ${WEIGHTS_FILE}`);
  }
  const specs = groups[0].weights;
  const weightBytes = await readFile(weightsFile);
  let expectedBytes = 0;
  for (const s of specs) {
    const per = BYTES_PER_DTYPE[s.dtype];
    if (per === undefined || s.quantization !== undefined) {
      throw new ValidationError(`${modelFile}: weight "${s.name}" has unsupported dtype ${s.dtype}${s.quantization ? ' (quantized)' : ''}`);
    }
    expectedBytes += per * tf.util.sizeFromShape(s.shape);
  }
  if (weightBytes.length !== expectedBytes) {
    throw new ValidationError(`${weightsFile}: ${weightBytes.length} bytes, ${MODEL_JSON_FILE} describes ${expectedBytes}`);
  }
  const weightData = weightBytes.buffer.slice(weightBytes.byteOffset, weightBytes.byteOffset + weightBytes.byteLength);
  const artifacts = await tf.io.getModelArtifactsForJSON(modelJson as tf.io.ModelJSON, async () => [specs, weightData]);

  let model: tfl.LayersModel;
  try {
    model = await tfl.loadLayersModel({ load: async () => artifacts });
  } catch (e) {
    throw new ValidationError(`${modelFile}: tfjs cannot load the model: ${e instanceof Error ? e.message : String(e)}`);
  }
  try {
    checkConsistency(`saved model ${dir}`, model, manifest);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, manifest };
}
