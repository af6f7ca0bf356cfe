export * from './box';
export * from './key-store';
