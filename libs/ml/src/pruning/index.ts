export * from './conv-blocks';
export * from './channel-scores';
export * from './prune-model';
export * from './prune-plan';
