/**
 * Predicts new images with a saved model or ensemble (issue 15): reads each image as the model's
 * manifest says (tiles of the covering grid through the frozen backbone, or the whole image),
 * averages the tiles' outputs, applies each member's temperature, combines the members as the
 * ensemble manifest says (combineMembers: mean, weighted mean or stacking), applies the ensemble's own temperature, and measures uncertainty (entropy, tile disagreement, member
 * disagreement, optionally MC dropout). One image at a time: a file that cannot be read is a
 * failure with its reason, never a crash, and memory holds one image's tiles.
 */
import { stat } from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages } from '@histofed/fl-core';
import { BAG_MASK_OFFSET, BAG_SLOT_EXTRA, HistoFedError, ValidationError } from '@histofed/fl-core';
import {
  FeatureCache,
  createStainNormalizer,
  gridOrigins,
  loadModelInputs,
  scaledImageSize,
  type BreakHisImage,
  type StainTarget,
  type TileRowExtractor,
  modelInputsKey,
  readClinicalCsv,
  type ClinicalTable,
} from '@histofed/data';
import {
  applyTemperature,
  cascadeSubtypePredictions,
  combineMembers,
  combinerKind,
  dataRowShape,
  isEnsembleDir,
  loadEnsemble,
  loadModel,
  mcDropoutPasses,
  hasDropout,
  mutualInformation,
  oneMinusConfidence,
  isBagLayersModel,
  predictiveEntropy,
  predictProbabilitiesAsync,
  probabilityVariance,
  readEnsembleManifest,
  splitTileClassifier,
  tileAttention,
  tileDisagreement,
  type EnsembleCombiner,
  type LoadedModel,
  type ModelCalibration,
  type OutputLayout,
  type SavedModelManifest,
} from '@histofed/ml';
import type { WeightedTile } from './heatmap';
import type { ImagePrediction, PredictionModel, Uncertainty } from './prediction-report';

/** Tiles listed per image in a bag model's prediction (`topTiles`), heaviest first. */
export const TOP_TILES = 5;

/** Largest image file read (bytes) and decoded (pixels): bounds what one file can make us allocate. */
export const DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024;
export const DEFAULT_MAX_PIXELS = 64 * 1024 * 1024;

export interface PredictorOptions {
  /** A tfjs Layers model directory for models with backbone 'layers-model'. */
  readonly backboneDir?: string;
  /** Tile features are cached here (per image content); absent: computed every time. */
  readonly featureCache?: FeatureCache;
  /** MC dropout passes per image (0 = off unless the review rule needs them). */
  readonly mcDropoutPasses?: number;
  readonly mcDropoutSeed?: number;
  readonly maxFileBytes?: number;
  readonly maxPixels?: number;
  /**
   * Fusion models (spec.clinical): the clinical table (CSV: patient plus the model's declared
   * columns), checked against each member's declaration when the predictor loads. Images whose
   * patient has no row, and every image when absent, take the no-record path.
   */
  readonly clinicalCsv?: string;
}

/** A file that cannot be predicted, and why (reported, not thrown past predictFile's caller). */
export class PredictionFailure extends HistoFedError {
  constructor(message: string) {
    super('PREDICTION', message);
  }
}

/**
 * A member's own temperature is applied to its outputs before the members are averaged (ensembles
 * only); the reading's calibration (the single model's, or the ensemble manifest's) after.
 */
interface Member {
  readonly name: string;
  readonly manifest: SavedModelManifest;
  /** What runs on the rows: the heads of a backbone model, else the whole model. */
  readonly model: tfl.LayersModel;
  readonly owned: tfl.LayersModel[];
  readonly extractor?: TileRowExtractor;
  readonly stain: Record<string, unknown> | null;
  readonly calibration?: ModelCalibration;
}

/**
 * The clinical table parsed against each fusion member's declaration (by its JSON). A table for a
 * model that fuses no record is refused: the caller would believe the record was read.
 */
async function clinicalTablesFor(members: readonly Member[], csv: string | undefined): Promise<Map<string, ClinicalTable>> {
  const tables = new Map<string, ClinicalTable>();
  const declarations = members.map((m) => m.manifest.spec.clinical).filter((c) => c !== undefined);
  if (csv === undefined) return tables;
  if (declarations.length === 0) throw new ValidationError(`--clinical ${csv}: the model reads no clinical record (its spec declares no clinical columns)`);
  for (const d of declarations) {
    const key = JSON.stringify(d);
    if (!tables.has(key)) tables.set(key, await readClinicalCsv(csv, d));
  }
  return tables;
}

/** An image without labels, in the shape the tile reader takes (its label fields are never read for prediction). */
function unlabeledImage(file: string, patient: string | undefined): BreakHisImage {
  return {
    path: file,
    relativePath: path.basename(file),
    // Placeholders: model inputs do not depend on labels, and predictions never read these.
    label: 'benign',
    labelIndex: 0,
    subtype: 'A',
    // A fusion model looks the patient's clinical record up by this id; '' is never a table's id.
    patientId: patient ?? '',
    caseId: 'unknown',
    magnification: 40,
    sequence: 0,
  };
}

function argmax(p: ArrayLike<number>, offset: number, k: number): number {
  let best = 0;
  for (let c = 1; c < k; c++) if (p[offset + c] > p[offset + best]) best = c;
  return best;
}

/** Mean of `rows` (count x width) as one row. */
function meanRow(rows: Float32Array, width: number): Float32Array {
  const count = rows.length / width;
  const out = new Float32Array(width);
  for (let i = 0; i < count; i++) for (let j = 0; j < width; j++) out[j] += rows[i * width + j];
  for (let j = 0; j < width; j++) out[j] /= count;
  return out;
}

function meanOf(rows: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(rows[0].length);
  for (const r of rows) for (let j = 0; j < out.length; j++) out[j] += r[j] / rows.length;
  return out;
}

export class Predictor {
  private disposed = false;

  private constructor(
    readonly description: PredictionModel,
    private readonly members: Member[],
    private readonly layout: OutputLayout,
    private readonly options: PredictorOptions,
    private readonly combine: EnsembleCombiner = 'mean-probabilities',
    /** Fusion members' clinical table, by the JSON of their declaration. */
    private readonly clinicalTables: ReadonlyMap<string, ClinicalTable> = new Map(),
  ) {}

  /** Loads a model directory or an ensemble directory (all members). */
  static async load(modelDir: string, options: PredictorOptions = {}): Promise<Predictor> {
    const ensemble = isEnsembleDir(modelDir);
    const ensembleManifest = ensemble ? await readEnsembleManifest(modelDir) : null;
    const loaded: (LoadedModel & { name: string })[] = ensemble
      ? (await loadEnsemble(modelDir)).members
      : [{ name: path.basename(path.resolve(modelDir)), ...(await loadModel(modelDir)) }];
    const members: Member[] = [];
    try {
      for (const m of loaded) {
        const { spec, preprocessing } = m.manifest;
        if (spec.backbone) {
          const split = await splitTileClassifier(m.model, spec, { dir: options.backboneDir });
          members.push({
            name: m.name,
            manifest: m.manifest,
            model: split.trainable,
            owned: [split.trainable, m.model],
            extractor: split.extractor,
            stain: preprocessing.stainNormalization,
            ...(ensemble && m.manifest.calibration ? { calibration: m.manifest.calibration } : {}),
          });
        } else {
          members.push({
            name: m.name,
            manifest: m.manifest,
            model: m.model,
            owned: [m.model],
            stain: preprocessing.stainNormalization,
            ...(ensemble && m.manifest.calibration ? { calibration: m.manifest.calibration } : {}),
          });
        }
      }
    } catch (e) {
      for (const m of loaded) m.model.dispose();
      throw e;
    }
    const first = loaded[0].manifest;
    const reading = ensemble ? ensembleManifest : first;
    const memberCalibration = Object.fromEntries(
      ensemble ? members.filter((m) => m.calibration).map((m) => [m.name, m.calibration as ModelCalibration]) : [],
    );
    const description: PredictionModel = {
      path: path.resolve(modelDir),
      kind: ensemble ? 'ensemble' : 'model',
      members: members.map((m) => m.name),
      classes: [...first.classes],
      subtypeClasses: first.subtypeClasses ? [...first.subtypeClasses] : null,
      calibration: reading?.calibration ?? null,
      memberCalibration,
      reviewRule: reading?.review ?? null,
      ...(ensembleManifest ? { combine: combinerKind(ensembleManifest.combine) } : {}),
    };
    const layout: OutputLayout = { numClasses: first.spec.numClasses, ...(first.spec.subtypeParents ? { subtypeParents: first.spec.subtypeParents } : {}) };
    let tables: Map<string, ClinicalTable>;
    try {
      tables = await clinicalTablesFor(members, options.clinicalCsv);
    } catch (e) {
      for (const m of members) for (const o of m.owned) o.dispose();
      throw e;
    }
    const declared = members.find((m) => m.manifest.spec.clinical)?.manifest.spec.clinical;
    if (declared) description.clinical = { columns: declared.columns.map((c) => c.name), table: options.clinicalCsv ? path.resolve(options.clinicalCsv) : null };
    return new Predictor(description, members, layout, options, ensembleManifest?.combine, tables);
  }

  /** True when a member weighs the tiles of an image (a bag model): predictions carry tile weights. */
  get weighsTiles(): boolean {
    return this.members.some((m) => isBagLayersModel(m.model));
  }

  /** MC dropout passes to run per image: the option, or what the review rule needs. */
  get mcPasses(): number {
    const asked = this.options.mcDropoutPasses ?? 0;
    const rule = this.description.reviewRule;
    const needed = rule?.measure === 'mcDropoutMutualInformation' ? (rule.mcDropoutPasses ?? 20) : 0;
    return Math.max(asked, needed);
  }

  /** Checks size limits before anything is decoded; returns the image's size. */
  private async checkFile(file: string): Promise<{ width: number; height: number }> {
    const maxBytes = this.options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    const maxPixels = this.options.maxPixels ?? DEFAULT_MAX_PIXELS;
    let size: number;
    try {
      const st = await stat(file);
      if (!st.isFile()) throw new Error('not a regular file');
      size = st.size;
    } catch (e) {
      throw new PredictionFailure(`cannot read it: ${(e as Error).message}`);
    }
    if (size === 0) throw new PredictionFailure('empty file');
    if (size > maxBytes) throw new PredictionFailure(`file of ${size} bytes is larger than the limit of ${maxBytes} bytes`);
    let meta: Awaited<ReturnType<ReturnType<typeof sharp>['metadata']>>;
    try {
      meta = await sharp(file, { limitInputPixels: false }).metadata();
    } catch (e) {
      throw new PredictionFailure(`not a readable image (PNG, JPEG or TIFF): ${(e as Error).message}`);
    }
    if (!meta.width || !meta.height) throw new PredictionFailure('not a readable image: no dimensions');
    if (meta.width * meta.height > maxPixels) {
      throw new PredictionFailure(`image of ${meta.width}x${meta.height} pixels is larger than the limit of ${maxPixels} pixels`);
    }
    return { width: meta.width, height: meta.height };
  }

  /**
   * A bag model's tile weights placed on the original image: slot k of an evaluation bag is grid
   * tile k of the scaled image (libs/data tiles), mapped back to the image's pixels.
   */
  private placeTiles(m: Member, size: { width: number; height: number }, weights: Float32Array, tiles: number): WeightedTile[] {
    const { spec } = m.manifest;
    const scale = spec.tiles?.scale ?? 1;
    const scaled = scaledImageSize(size.width, size.height, { size: spec.imageSize, scale });
    const origins = gridOrigins(scaled.width, scaled.height, spec.imageSize);
    if (origins.length !== tiles) throw new PredictionFailure(`the model read ${tiles} tiles where the grid has ${origins.length}`);
    const fx = size.width / scaled.width;
    const fy = size.height / scaled.height;
    return origins.map((o, k) => {
      const x = Math.min(size.width - 1, Math.round(o.x * fx));
      const y = Math.min(size.height - 1, Math.round(o.y * fy));
      return {
        x,
        y,
        width: Math.max(1, Math.min(size.width - x, Math.round(spec.imageSize * fx))),
        height: Math.max(1, Math.min(size.height - y, Math.round(spec.imageSize * fy))),
        weight: weights[k],
      };
    });
  }

  /**
   * One image's prediction (patient filled in by the caller). Throws PredictionFailure with the
   * reason. Bag models (attention-mil, transformer-mil) also give every tile's weight
   * (`tileWeights`, original pixels; the mean over an ensemble's bag members of the same tiling)
   * and the heaviest `topTiles`.
   */
  async predictFile(
    file: string,
    patient?: string,
  ): Promise<Omit<ImagePrediction, 'patient' | 'review' | 'reason' | 'heatmap'> & { readonly measures: Uncertainty; readonly tileWeights?: readonly WeightedTile[] }> {
    if (this.disposed) throw new Error('Predictor: disposed');
    const size = await this.checkFile(file);
    const k = this.layout.numClasses;
    const width = k + (this.layout.subtypeParents?.length ?? 0);
    const inputs = new Map<string, LabeledImages>();
    const memberRows: Float32Array[] = [];
    const memberTiles: Float32Array[] = [];
    const passes = this.mcPasses;
    const memberPasses: Float32Array[][] = [];
    let bag: { member: Member; tiles: number; weights: Float32Array[] } | null = null;
    for (const m of this.members) {
      const rows = await this.inputsFor(m, file, patient, inputs);
      const out = await predictProbabilitiesAsync(m.model, rows.images, rows.count, dataRowShape(rows));
      if (isBagLayersModel(m.model)) {
        const weights = tileAttention(m.model, rows.images, rows.count);
        const [slots, slot] = dataRowShape(rows);
        let tiles = 0;
        for (let k = 0; k < slots; k++) tiles += rows.images[k * slot + slot - BAG_SLOT_EXTRA + BAG_MASK_OFFSET] > 0 ? 1 : 0;
        const same = bag === null || JSON.stringify(modelInputsKey(bag.member.manifest.spec)) === JSON.stringify(modelInputsKey(m.manifest.spec));
        if (bag === null) bag = { member: m, tiles, weights: [weights] };
        else if (same && weights.length === bag.weights[0].length) bag.weights.push(weights);
      } else {
        memberTiles.push(out);
      }
      memberRows.push(this.calibrated(meanRow(out, width), m.calibration));
      if (passes > 0 && hasDropout(m.model)) {
        const seed = this.options.mcDropoutSeed ?? 1;
        const runs = await mcDropoutPasses(m.model, rows.images, rows.count, dataRowShape(rows), { passes, seed });
        memberPasses.push(runs.map((r: Float32Array) => this.calibrated(meanRow(r, width), m.calibration)));
      }
    }
    let row = combineMembers(memberRows, this.layout, this.combine);
    if (this.description.calibration) row = this.calibrated(row, this.description.calibration);
    const cls = argmax(row, 0, k);
    // Per-tile rows come from the members that classify tiles; a bag model classifies the image.
    const tiles = memberTiles.length > 0 ? meanOf(memberTiles) : null;
    const tileWeights = bag ? this.placeTiles(bag.member, size, meanOf(bag.weights), bag.tiles) : undefined;
    const uncertainty: Uncertainty = {
      entropy: predictiveEntropy(row, k),
      oneMinusConfidence: oneMinusConfidence(row, k),
      tiles: tiles ? tiles.length / width : (bag?.tiles ?? 1),
      tileDisagreement: tiles ? tileDisagreement(tiles, width, k, cls) : 0,
      ...(memberRows.length > 1
        ? { memberMutualInformation: mutualInformation(memberRows, k), memberVariance: probabilityVariance(memberRows, k - 1) }
        : {}),
      ...(memberPasses.length > 0 ? this.mcMeasures(memberPasses, k) : {}),
    };
    const classes = this.description.classes;
    let subtype: ImagePrediction['subtype'] = null;
    const parents = this.layout.subtypeParents;
    const names = this.description.subtypeClasses;
    if (parents && names) {
      const s = cascadeSubtypePredictions(row, k, parents)[0];
      let within = 0;
      parents.forEach((p, j) => p === cls && (within += row[k + j]));
      subtype = { class: names[s], probability: within > 0 ? row[k + s] / within : 0 };
    }
    return {
      file,
      stage1: {
        class: classes[cls],
        probability: row[cls],
        probabilities: Object.fromEntries(classes.map((c, i) => [c, row[i]])),
      },
      subtype,
      uncertainty,
      ...(tileWeights
        ? { topTiles: [...tileWeights].sort((a, b) => b.weight - a.weight).slice(0, TOP_TILES), tileWeights }
        : {}),
      measures: uncertainty,
    };
  }

  /** MC dropout: the ensemble of the members' pass k, for each k; then mutual information and variance over the passes. */
  private mcMeasures(memberPasses: Float32Array[][], k: number): Pick<Uncertainty, 'mcDropoutPasses' | 'mcDropoutMutualInformation' | 'mcDropoutVariance'> {
    const passes = memberPasses[0].length;
    // The combiner needs every member; when only some members have dropout, their passes are averaged.
    const combine = (rows: Float32Array[]) => (rows.length === this.members.length ? combineMembers(rows, this.layout, this.combine) : meanOf(rows));
    const combined = Array.from({ length: passes }, (_, p) => combine(memberPasses.map((m) => m[p])));
    return {
      mcDropoutPasses: passes,
      mcDropoutMutualInformation: mutualInformation(combined, k),
      mcDropoutVariance: probabilityVariance(combined, k - 1),
    };
  }

  private calibrated(row: Float32Array, c: ModelCalibration | undefined): Float32Array {
    if (!c) return row;
    return applyTemperature(row, this.layout, { stage1: c.stage1, ...(c.subtype !== undefined ? { subtype: c.subtype } : {}) });
  }

  /** Whether the patient has a row in the clinical table of a fusion model (undefined: no member fuses a record). */
  clinicalRecordOf(patient: string | undefined): boolean | undefined {
    const fusing = this.members.filter((m) => m.manifest.spec.clinical);
    if (fusing.length === 0) return undefined;
    const table = this.clinicalTables.get(JSON.stringify(fusing[0].manifest.spec.clinical));
    return patient !== undefined && table !== undefined && table.records.has(patient);
  }

  private async inputsFor(m: Member, file: string, patient: string | undefined, inputs: Map<string, LabeledImages>): Promise<LabeledImages> {
    const { spec } = m.manifest;
    const key = JSON.stringify([...modelInputsKey(spec), m.extractor?.id ?? null, m.stain]);
    const have = inputs.get(key);
    if (have) return have;
    const normalize = m.stain ? createStainNormalizer(m.stain as unknown as StainTarget) : undefined;
    let rows: LabeledImages;
    try {
      rows = await loadModelInputs([unlabeledImage(file, patient)], spec, {
        clinical: spec.clinical ? this.clinicalTables.get(JSON.stringify(spec.clinical)) : undefined,
        extractor: m.extractor,
        featureCache: this.options.featureCache,
        transform: normalize ? { key: JSON.stringify(m.stain), apply: (rgb) => normalize(rgb) } : undefined,
      });
    } catch (e) {
      throw new PredictionFailure((e as Error).message.replace(file, path.basename(file)));
    }
    if (rows.count === 0) throw new PredictionFailure('the image gave no tile');
    inputs.set(key, rows);
    return rows;
  }

  /**
   * What the (first) member's heads read for `file`, averaged over its tiles: the frozen backbone's
   * pooled tile features for a backbone model, the pixels of the whole image otherwise. Active
   * learning's coreset strategy measures distances between images on it. Tile features come from
   * the feature cache when the image was predicted before.
   */
  async imageFeatures(file: string): Promise<Float32Array> {
    if (this.disposed) throw new Error('Predictor: disposed');
    await this.checkFile(file);
    const rows = await this.inputsFor(this.members[0], file, undefined, new Map());
    return meanRow(rows.images, rows.images.length / rows.count);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const m of this.members) for (const model of m.owned) model.dispose();
  }
}
