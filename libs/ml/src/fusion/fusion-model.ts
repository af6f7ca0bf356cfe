/**
 * Fusion of image features with a patient's clinical record (issue 19): heads on a frozen
 * backbone's tile features whose input row is the tile's features followed by its patient's encoded
 * clinical record ([features + clinicalWidth]; libs/data encodeClinical: a fixed layout from the run's
 * column declaration, with missing flags and a "no record" flag, so a patient without a record takes
 * a learned path of its own). Late fusion:
 *
 * - concatenation (`fusionGate` 0): [image features, ReLU(W_t · clinical)] -> the heads;
 * - gated (`fusionGate` 1): the image features are first scaled per feature by
 *   sigmoid(W_g · clinical + b_g) (b_g starts at 2: the gate opens at 0.88), then concatenated.
 *
 * While training, each row's record is dropped (replaced by "no record") with probability
 * `recordDropout` (default 0.5; RecordDropout), and its image features (set to 0) with probability
 * `imageDropout` (default 0.5; ImageDropout): rows with one modality train each side to predict on
 * its own, rows with both their sum. The image's prediction is the mean of its tiles' (as the model without clinical data), a
 * patient's the mean of its images'. Weight names are fixed (`tab_fc`, `tab_gate`), like every layer's.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { ModelSpec } from '@histofed/fl-core';
import { ValidationError, clinicalWidth } from '@histofed/fl-core';

export interface ColumnSliceArgs {
  name?: string;
  begin: number;
  size: number;
}

/** Columns [begin, begin + size) of a [b, n] input. Registered with tfjs's serialization. */
export class ColumnSlice extends tfl.layers.Layer {
  static readonly className = 'HistoFedColumnSlice';
  readonly begin: number;
  readonly size: number;

  constructor(args: ColumnSliceArgs) {
    super({ name: args.name });
    if (!Number.isInteger(args.begin) || args.begin < 0 || !Number.isInteger(args.size) || args.size < 1) {
      throw new ValidationError(`ColumnSlice: begin must be an integer >= 0 and size >= 1, got ${args.begin} and ${args.size}`);
    }
    this.begin = args.begin;
    this.size = args.size;
  }

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tfl.Shape;
    const width = s[s.length - 1];
    if (s.length !== 2 || width === null || this.begin + this.size > width) {
      throw new ValidationError(`${this.name}: columns [${this.begin}, ${this.begin + this.size}) of rows of ${width} values`);
    }
    return [s[0], this.size];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => tf.slice((Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor2D, [0, this.begin], [-1, this.size]));
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), begin: this.begin, size: this.size };
  }

  override getClassName(): string {
    return ColumnSlice.className;
  }
}
tf.serialization.registerClass(ColumnSlice);

export interface ModalityDropoutArgs {
  name?: string;
  /** Chance that a training row loses the modality. */
  rate: number;
  seed: number;
}

/**
 * Modality dropout: while training, each row loses its input (whole, as `dropRows` replaces it)
 * with probability `rate`; at inference every row passes unchanged. The two modalities' layers
 * below differ only in what a dropped row becomes.
 */
abstract class ModalityDropout extends tfl.layers.Layer {
  readonly rate: number;
  readonly seed: number;
  private draws = 0;

  constructor(args: ModalityDropoutArgs, option: string) {
    super({ name: args.name });
    if (!(args.rate >= 0 && args.rate < 1)) throw new ValidationError(`model.options.${option}: must be in [0, 1), got ${args.rate}`);
    this.rate = args.rate;
    this.seed = args.seed;
  }

  /** `x` [rows, width] with the rows where `drop` [rows, 1] is true replaced. */
  protected abstract dropRows(x: tf.Tensor2D, drop: tf.Tensor2D): tf.Tensor;

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape {
    return (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tfl.Shape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: { training?: boolean }): tf.Tensor {
    return tf.tidy(() => {
      const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor2D;
      if (!kwargs['training'] || this.rate === 0) return tf.clone(x);
      const drop = tf.less(tf.randomUniform([x.shape[0], 1], 0, 1, 'float32', this.seed + this.draws++), this.rate) as tf.Tensor2D;
      return this.dropRows(x, drop);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), rate: this.rate, seed: this.seed };
  }
}

/**
 * Modality dropout on the clinical record: a dropped row's record becomes the encoding of a patient
 * without a record (zeros, the last value 1). The model cannot lean on the record alone (with a few
 * dozen training patients, a record is a patient's identity: memorizing it fits the training
 * patients and nothing else), and the no-record path is trained on every patient. Registered with
 * tfjs's serialization.
 */
export class RecordDropout extends ModalityDropout {
  static readonly className = 'HistoFedRecordDropout';

  constructor(args: ModalityDropoutArgs) {
    super(args, 'recordDropout');
  }

  protected dropRows(x: tf.Tensor2D, drop: tf.Tensor2D): tf.Tensor {
    const [rows, width] = x.shape;
    const absent = tf.concat([tf.zeros([1, width - 1]), tf.ones([1, 1])], 1);
    return tf.where(tf.tile(drop, [1, width]), tf.tile(absent, [rows, 1]), x);
  }

  override getClassName(): string {
    return RecordDropout.className;
  }
}
tf.serialization.registerClass(RecordDropout);

/**
 * Modality dropout on the image side: a dropped row's image features are all 0 (no rescaling: the
 * row carries no image evidence at all). With the heads reading [image features, tabular encoding]
 * linearly, the stage-1 logit is a sum of an image term and a record term; rows without their image
 * make the record term predict the label on its own (as a tabular-only model would) instead of only
 * explaining what the image term, which can fit a few dozen training patients' images by itself,
 * leaves over. Registered with tfjs's serialization.
 */
export class ImageDropout extends ModalityDropout {
  static readonly className = 'HistoFedImageDropout';

  constructor(args: ModalityDropoutArgs) {
    super(args, 'imageDropout');
  }

  protected dropRows(x: tf.Tensor2D, drop: tf.Tensor2D): tf.Tensor {
    return tf.mul(x, tf.cast(tf.logicalNot(drop), 'float32'));
  }

  override getClassName(): string {
    return ImageDropout.className;
  }
}
tf.serialization.registerClass(ImageDropout);

export interface FusionOptions {
  /** Values of an encoded clinical record (libs/data clinicalWidth of the run's columns). */
  readonly clinicalWidth: number;
  /** Gated fusion (the record scales the image features) instead of plain concatenation. */
  readonly gated: boolean;
  /** Units of the tabular encoder; 0: the encoded record goes to the heads as it is (linear in the record). */
  readonly tabularUnits: number;
  /** Modality dropout: chance that a training row's record is replaced by "no record" (RecordDropout). */
  readonly recordDropout: number;
  /** Modality dropout: chance that a training row's image features are set to 0 (ImageDropout). */
  readonly imageDropout: number;
}

/**
 * The fused input and the features the heads read: `features` image values then `o.clinicalWidth`
 * clinical values per row. Returns the input and the fused feature tensor (the caller attaches the heads).
 */
export function fusionFeatures(features: number, o: FusionOptions, seed: number): { input: tfl.SymbolicTensor; fused: tfl.SymbolicTensor } {
  if (!Number.isInteger(o.clinicalWidth) || o.clinicalWidth < 1) throw new ValidationError(`model.options.clinicalWidth: must be a positive integer, got ${o.clinicalWidth}`);
  const input = tfl.input({ name: 'features', shape: [features + o.clinicalWidth] });
  let image = new ColumnSlice({ name: 'image_features', begin: 0, size: features }).apply(input) as tfl.SymbolicTensor;
  let clinical = new ColumnSlice({ name: 'clinical', begin: features, size: o.clinicalWidth }).apply(input) as tfl.SymbolicTensor;
  if (o.imageDropout > 0) image = new ImageDropout({ name: 'image_dropout', rate: o.imageDropout, seed: seed + 3200 }).apply(image) as tfl.SymbolicTensor;
  if (o.recordDropout > 0) clinical = new RecordDropout({ name: 'record_dropout', rate: o.recordDropout, seed: seed + 3100 }).apply(clinical) as tfl.SymbolicTensor;
  const init = (k: number) => tfl.initializers.glorotUniform({ seed: seed + 3000 + k });
  if (o.gated) {
    const gate = tfl.layers
      .dense({ name: 'tab_gate', units: features, activation: 'sigmoid', kernelInitializer: init(2), biasInitializer: tfl.initializers.constant({ value: 2 }) })
      .apply(clinical) as tfl.SymbolicTensor;
    image = tfl.layers.multiply({ name: 'gated_features' }).apply([image, gate]) as tfl.SymbolicTensor;
  }
  const tabular =
    o.tabularUnits === 0
      ? clinical
      : (tfl.layers.dense({ name: 'tab_fc', units: o.tabularUnits, activation: 'relu', kernelInitializer: init(1), biasInitializer: 'zeros' }).apply(clinical) as tfl.SymbolicTensor);
  const fused = tfl.layers.concatenate({ name: 'fusion', axis: -1 }).apply([image, tabular]) as tfl.SymbolicTensor;
  return { input, fused };
}

/**
 * The fusion options of a backbone-head spec, or null: a spec that declares `clinical` columns (the
 * run config's; its record width follows from them), or one with options.clinicalWidth > 0 (the
 * benches' way, a record without a declaration; when both are given they must agree).
 */
export function fusionOptionsOf(spec: Pick<ModelSpec, 'options' | 'clinical'>): FusionOptions | null {
  const declared = spec.clinical ? clinicalWidth(spec.clinical) : undefined;
  const option = spec.options?.['clinicalWidth'];
  if (declared !== undefined && option !== undefined && option !== declared) {
    throw new ValidationError(`model.options.clinicalWidth: ${option}, but the declared clinical columns encode to ${declared} values (leave the option out)`);
  }
  const width = declared ?? option ?? 0;
  if (width === 0) return null;
  const gate = spec.options?.['fusionGate'] ?? 0;
  const units = spec.options?.['tabularUnits'] ?? 16;
  const recordDropout = spec.options?.['recordDropout'] ?? 0.5;
  const imageDropout = spec.options?.['imageDropout'] ?? 0.5;
  if (!(recordDropout >= 0 && recordDropout < 1)) throw new ValidationError(`model.options.recordDropout: must be in [0, 1), got ${recordDropout}`);
  if (!(imageDropout >= 0 && imageDropout < 1)) throw new ValidationError(`model.options.imageDropout: must be in [0, 1), got ${imageDropout}`);
  if (!Number.isInteger(width) || width < 1 || width > 4096) throw new ValidationError(`model.options.clinicalWidth: must be an integer in [0, 4096], got ${width}`);
  if (gate !== 0 && gate !== 1) throw new ValidationError(`model.options.fusionGate: 0 (concatenation) or 1 (gated), got ${gate}`);
  if (!Number.isInteger(units) || units < 0 || units > 1024) throw new ValidationError(`model.options.tabularUnits: must be an integer in [0, 1024], got ${units}`);
  return { clinicalWidth: width, gated: gate === 1, tabularUnits: units, recordDropout, imageDropout };
}
