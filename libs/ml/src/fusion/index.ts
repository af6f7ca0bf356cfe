export * from './fusion-model';
