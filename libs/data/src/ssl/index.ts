export * from './contrastive-views';
