export * from './nt-xent';
export * from './contrastive-model';
