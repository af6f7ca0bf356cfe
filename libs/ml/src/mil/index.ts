export * from './bag-layers';
export * from './bag-models';
export * from './tile-transformer';
