/**
 * Pure: the `ensemble` strategy's inputs of bench:active from the members' per-image outputs, as
 * `histofed-site suggest --strategy ensemble` gets them from a run's ensemble (libs/inference
 * Predictor): the members' rows combined by the mean of their probabilities, and per image the
 * mutual information between the prediction and the member (stage 1).
 */
import { combineMembers, mutualInformation, type OutputLayout } from '@histofed/ml';

export interface MemberDisagreement {
  /** The ensemble's per-image rows (mean of the members' probabilities), `width` values per image. */
  readonly probabilities: Float32Array;
  /** Per image: mutual information between the stage-1 prediction and the member (/ log k). */
  readonly mutualInformation: number[];
}

/** `members`: each member's per-image output rows (same images, same layout). */
export function memberDisagreement(members: readonly Float32Array[], layout: OutputLayout): MemberDisagreement {
  const probabilities = combineMembers(members, layout);
  const k = layout.numClasses;
  const width = k + (layout.subtypeParents?.length ?? 0);
  const images = probabilities.length / width;
  return {
    probabilities,
    mutualInformation: Array.from({ length: images }, (_, i) => mutualInformation(members, k, i * width)),
  };
}
