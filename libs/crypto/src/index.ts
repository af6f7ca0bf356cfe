export * from './box';
export * from './key-store';
export * from './signing';
