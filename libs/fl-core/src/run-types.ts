/** Metrics are named numbers (accuracy, loss, ...). */
export type Metrics = Record<string, number>;

/** The model a run trains. `kind` selects an architecture from libs/ml. */
export interface ModelSpec {
  readonly kind: string;
  readonly imageSize: number;
  readonly numClasses: number;
  /** Width multiplier or other architecture knobs, by name. */
  readonly options?: Readonly<Record<string, number>>;
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
}

/** The classes of stage 1 (benign vs malignant), in label order. */
export const STAGE1_CLASSES = ['benign', 'malignant'] as const;
export type Stage1Class = (typeof STAGE1_CLASSES)[number];
