export * from './tile-geometry';
export * from './tile-reader';
export * from './feature-cache';
export * from './tile-set';
export * from './model-inputs';
export * from './tile-bags';
