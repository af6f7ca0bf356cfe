export * from './errors';
export * from './weights';
export * from './weights-codec';
export * from './run-types';
export * from './dataset-types';
export * from './signed-bytes';
export * from './weight-vectors';
export * from './local-tensors';
