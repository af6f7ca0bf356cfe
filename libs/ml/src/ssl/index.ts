export * from './nt-xent';
export * from './contrastive-model';
export * from './encoder';
export * from './contrastive-trainer';
