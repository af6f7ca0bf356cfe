/**
 * Decoded images ready for a model: `count` RGB images of `imageSize` x `imageSize`, channels last,
 * values in [0, 1], row-major in one Float32Array (count * imageSize * imageSize * 3 values).
 * `labels[i]` is the class index of image i; `groups[i]`, when present, is its patient (slide code)
 * so that metrics can be reported per patient. `subtypes[i]`, when present, is its stage-2 class
 * (index in BREAKHIS_SUBTYPE_CODES; needed to train and evaluate two-stage models), and
 * `magnifications[i]` its optical magnification (40, 100, 200, 400) for per-magnification metrics.
 */
export interface LabeledImages {
  /** `count` rows of `sampleShape` (default [imageSize, imageSize, 3]) values each. */
  readonly images: Float32Array;
  readonly labels: Int32Array;
  readonly count: number;
  readonly imageSize: number;
  readonly groups?: readonly string[];
  readonly subtypes?: Int32Array;
  readonly magnifications?: readonly number[];
  /**
   * Shape of one row when it is not an RGB image of imageSize: e.g. [features] for tile feature
   * vectors. Models check it against their input.
   */
  readonly sampleShape?: readonly number[];
  /**
   * Rows that are tiles (or tile features) of images: row i belongs to image imageOf[i] (0-based,
   * every image has at least one row). Labels, groups, subtypes and magnifications are given per row
   * (each row repeats its image's); evaluation averages the rows' outputs per image.
   */
  readonly imageOf?: Int32Array;
  /**
   * Where each tile row lies in its image: [count * 2] values, row r's tile centre as (y, x)
   * fractions of the (scaled) image's height and width, in [0, 1]. Present when the tile loader
   * was asked for positions (the bag models read them: tile-bags.ts).
   */
  readonly tilePositions?: Float32Array;
}
