export * from './model-metadata';
export * from './model-reading';
export * from './temperature';
export * from './calibration-stats';
