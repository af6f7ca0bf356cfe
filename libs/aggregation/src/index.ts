export * from './strategy';
export * from './weights-math';
export * from './site-selection';
export * from './fedavg';
