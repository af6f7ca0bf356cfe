export * from './measures';
export * from './mc-dropout';
export * from './review';
