/** Metrics are named numbers (accuracy, loss, ...). */
export type Metrics = Record<string, number>;

/** The model a run trains. `kind` selects an architecture from libs/ml. */
export interface ModelSpec {
  readonly kind: string;
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
}

/**
 * A stain-normalization target shared by every site and the coordinator's evaluation: small and
 * free of pixels (fitted statistics or stain vectors). libs/data validates and applies it.
 */
export interface StainNormalizationTarget {
  readonly method: 'macenko' | 'reinhard';
  readonly [field: string]: unknown;
}

/** What a site needs to train one round, besides the global weights. */
export interface RoundConfig {
  readonly runId: string;
  readonly round: number;
  readonly model: ModelSpec;
  readonly localEpochs: number;
  readonly batchSize: number;
  readonly learningRate: number;
  /** FedProx proximal coefficient mu (0 disables the term). */
  readonly proximalMu: number;
  readonly seed: number;
  /** Applied to every image before training and evaluation; null = none. */
  readonly stainNormalization: StainNormalizationTarget | null;
  /** Augment the training images (flips, rotations, zoom, colour jitter), a new draw every round. */
  readonly augment: boolean;
  /**
   * 'balanced': each site weights the loss of every class (and subtype) by its inverse frequency in
   * its own training images (capped), against class imbalance; 'none': plain cross-entropy.
   */
  readonly classWeighting: ClassWeighting;
}

export type ClassWeighting = 'none' | 'balanced';

/** The classes of stage 1 (benign vs malignant), in label order. */
export const STAGE1_CLASSES = ['benign', 'malignant'] as const;
export type Stage1Class = (typeof STAGE1_CLASSES)[number];

/** The eight BreakHis subtypes by their file-name code, in stage-2 label order: four benign, four malignant. */
export const BREAKHIS_SUBTYPE_CODES = ['A', 'F', 'PT', 'TA', 'DC', 'LC', 'MC', 'PC'] as const;
/** Stage-1 class (index in STAGE1_CLASSES) of each subtype in BREAKHIS_SUBTYPE_CODES. */
export const BREAKHIS_SUBTYPE_PARENTS: readonly number[] = Object.freeze([0, 0, 0, 0, 1, 1, 1, 1]);

/** The default model of a run: the two-stage SE-CNN (stage 1 benign/malignant, stage 2 the BreakHis subtype). */
export const DEFAULT_RUN_MODEL: ModelSpec = Object.freeze({
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
