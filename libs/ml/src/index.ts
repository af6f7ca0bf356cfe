export * from './backend';
export * from './wasm-training-kernels';
export * from './models';
export * from './weights-bridge';
export * from './losses';
export * from './train';
export * from './metrics';
export * from './evaluate';
export { mulberry32, mixSeed, shuffledIndices } from './random';
