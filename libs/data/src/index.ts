export * from './data-error';
export * from './breakhis-names';
export * from './breakhis-reader';
export * from './synthetic-breakhis';
export * from './splits';
export * from './image-loader';
export { mulberry32, hashSeed, seededShuffle } from './prng';
