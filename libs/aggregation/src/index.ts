export * from './strategy';
export * from './weights-math';
export * from './site-selection';
export * from './fedavg';
export * from './robust';
export * from './fedopt';
export * from './create-strategy';
export * from './local-tensors';
