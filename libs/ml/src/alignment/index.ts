export * from './feature-moments';
export * from './alignment-loss';
export { featureMoments, penultimateDim, type FeatureMomentsOptions, type FeatureRows } from './penultimate';
export { checkAlignmentOptions, MAX_ALIGNMENT_LAMBDA, type AlignmentOptions } from './training';
export { symmetricEigen, type SymmetricEigen } from './linalg64';
