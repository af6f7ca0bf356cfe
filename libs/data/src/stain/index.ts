// Stain normalization and simulated stain shifts. Pixels: Float32Array of RGB triples in [0, 1].
export type { RgbPixels, Vec3 as StainVector } from './pixels';
export { symmetricEigen3, type SymmetricEigen3 } from './eigen3';
export * from './reinhard';
export * from './macenko';
export * from './stain-shift';
export * from './normalizer';
export * from './hed-jitter';
