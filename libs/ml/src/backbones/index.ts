export * from './backbone-source';
export * from './backbone';
export * from './rewire';
export * from './tile-classifier';
