/**
 * Decoded images ready for a model: `count` RGB images of `imageSize` x `imageSize`, channels last,
 * values in [0, 1], row-major in one Float32Array (count * imageSize * imageSize * 3 values).
 * `labels[i]` is the class index of image i; `groups[i]`, when present, is its patient (slide code)
 * so that metrics can be reported per patient.
 */
export interface LabeledImages {
  readonly images: Float32Array;
  readonly labels: Int32Array;
  readonly count: number;
  readonly imageSize: number;
  readonly groups?: readonly string[];
}
