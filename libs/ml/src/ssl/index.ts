export * from './nt-xent';
export * from './contrastive-model';
export * from './feature-adapter';
export * from './encoder';
export * from './contrastive-trainer';
