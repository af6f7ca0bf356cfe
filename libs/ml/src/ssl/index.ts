export * from './nt-xent';
