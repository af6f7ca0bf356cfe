import type { ClinicalSchema } from './clinical-types';
/** Metrics are named numbers (accuracy, loss, ...). */
export type Metrics = Record<string, number>;

/** The backbones HistoFed knows (see BackboneSpec.name). */
export const BACKBONE_NAMES = ['mobilenet-v2-imagenet', 'layers-model'] as const;
export type BackboneName = (typeof BACKBONE_NAMES)[number];

/**
 * A pretrained network whose features the model's heads read (libs/ml `backbones/`). Sites and the
 * coordinator load it locally (never over the wire) and check `sha256`.
 */
export interface BackboneSpec {
  /**
   * 'mobilenet-v2-imagenet': Keras MobileNetV2 (alpha 1.0) from the npm package nsfwjs@4.4.0, whose
   * layers up to block_10 hold the ImageNet weights; 'layers-model': any tfjs Layers model directory
   * that each site names locally (`--backbone DIR`).
   */
  readonly name: BackboneName;
  /** SHA-256 of the backbone's source (topology and weight bytes); a site whose copy differs refuses the task. */
  readonly sha256?: string;
  /** The layer whose output, mean-pooled over the tile, is a tile's feature vector. */
  readonly cut: string;
  /** Pixel scaling the backbone expects: 'unit' = [0, 1], 'signed' = [-1, 1]. */
  readonly input: 'unit' | 'signed';
  /** Length of the feature vector (channels of `cut`); filled in when the backbone is resolved. */
  readonly features?: number;
  /**
   * Fine-tuning mode: the first backbone layer that trains; it and every layer after it up to `cut`
   * are part of the federated model (their outputs are not cached). Absent: frozen backbone, only the
   * heads train and federate, on tile features each site computes once and caches.
   */
  readonly trainFrom?: string;
}

/**
 * Images are read as tiles of `imageSize` x `imageSize` pixels: the image is scaled by `scale`
 * (1 = native resolution), training sees `views` random crops per image (augmented when the run
 * augments) plus the covering grid, evaluation sees the covering grid; an image's prediction is the
 * mean of its tiles', a patient's the mean of its images'.
 */
export interface TileSpec {
  readonly scale: number;
  readonly views: number;
}

/** The model a run trains. `kind` selects an architecture from libs/ml. */
export interface ModelSpec {
  readonly kind: string;
  /** Input size of the model in pixels: the tile size when `tiles` is set, else the whole image's (resized, centre square). */
  readonly imageSize: number;
  readonly numClasses: number;
  /** Width multiplier or other architecture knobs, by name. */
  readonly options?: Readonly<Record<string, number>>;
  /**
   * Two-stage models: a second head classifies the subtype. `subtypeParents[j]` is the stage-1
   * class of subtype j (for BreakHis `BREAKHIS_SUBTYPE_PARENTS`). The model's output row is then the
   * stage-1 softmax (numClasses values) followed by the subtype softmax (subtypeParents.length
   * values). Absent or empty: a single-stage model.
   */
  readonly subtypeParents?: readonly number[];
  /** A pretrained backbone under the heads (kind 'backbone-head'). */
  readonly backbone?: BackboneSpec;
  /** Tile geometry; absent = the whole image resized to imageSize (the compact CNNs' default). */
  readonly tiles?: TileSpec;
  /**
   * Fusion with a clinical record (issue 19): the columns of the clinical table every site may give,
   * declared by the run (never derived from a site's data). A backbone-head model then reads each
   * row's tile features followed by its patient's encoded record (clinicalWidth(clinical) values).
   */
  readonly clinical?: ClinicalSchema;
}

/**
 * A stain-normalization target shared by every site and the coordinator's evaluation: small and
 * free of pixels (fitted statistics or stain vectors). libs/data validates and applies it.
 */
export interface StainNormalizationTarget {
  readonly method: 'macenko' | 'reinhard';
  readonly [field: string]: unknown;
}

/**
 * Class-imbalance handling on the sites. The round configuration itself (RoundConfig) is derived
 * from its wire schema in libs/protocol (roundConfigSchema).
 */
export const CLASS_WEIGHTINGS = ['none', 'balanced'] as const;
export type ClassWeighting = (typeof CLASS_WEIGHTINGS)[number];

/** The classes of stage 1 (benign vs malignant), in label order. */
export const STAGE1_CLASSES = ['benign', 'malignant'] as const;
export type Stage1Class = (typeof STAGE1_CLASSES)[number];

/** The eight BreakHis subtypes by their file-name code, in stage-2 label order: four benign, four malignant. */
export const BREAKHIS_SUBTYPE_CODES = ['A', 'F', 'PT', 'TA', 'DC', 'LC', 'MC', 'PC'] as const;
/** Stage-1 class (index in STAGE1_CLASSES) of each subtype in BREAKHIS_SUBTYPE_CODES. */
export const BREAKHIS_SUBTYPE_PARENTS: readonly number[] = Object.freeze([0, 0, 0, 0, 1, 1, 1, 1]);

/**
 * The default backbone: ImageNet MobileNetV2 (from nsfwjs@4.4.0), features of block 10 (the last
 * block whose weights are ImageNet's), pixels scaled to [-1, 1] as Keras trained it.
 */
export const DEFAULT_BACKBONE: BackboneSpec = Object.freeze({ name: 'mobilenet-v2-imagenet', cut: 'block_10_depthwise_relu', input: 'signed' });

/**
 * The default model of a run: two-stage heads (stage 1 benign/malignant, stage 2 the BreakHis
 * subtype) on the frozen ImageNet backbone's features of 224 px tiles at native resolution (image =
 * mean of its grid tiles; 8 random training views per image besides the grid).
 */
export const DEFAULT_RUN_MODEL: ModelSpec = Object.freeze({
  kind: 'backbone-head',
  imageSize: 224,
  numClasses: 2,
  subtypeParents: BREAKHIS_SUBTYPE_PARENTS,
  backbone: DEFAULT_BACKBONE,
  tiles: Object.freeze({ scale: 1, views: 8 }),
  options: Object.freeze({ denseUnits: 0, dropout: 0.25 }),
});

/** The compact two-stage SE-CNN on whole images at 64 px: small, fast runs (and the synthetic demo). */
export const COMPACT_RUN_MODEL: ModelSpec = Object.freeze({
  kind: 'se-cnn',
  imageSize: 64,
  numClasses: 2,
  subtypeParents: BREAKHIS_SUBTYPE_PARENTS,
});

/** Number of values in a model's output row: stage-1 classes plus subtypes. */
export function outputWidth(spec: Pick<ModelSpec, 'numClasses' | 'subtypeParents'>): number {
  return spec.numClasses + (spec.subtypeParents?.length ?? 0);
}

/** True when the spec describes a two-stage (stage-1 + subtype) model. */
export function isTwoStage(spec: Pick<ModelSpec, 'subtypeParents'>): boolean {
  return (spec.subtypeParents?.length ?? 0) > 0;
}
