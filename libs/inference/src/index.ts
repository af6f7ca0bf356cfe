export * from './format';
export * from './image-files';
export * from './patients-csv';
export * from './predict-images';
export * from './prediction-report';
export * from './predictor';
export * from './review';
export * from './active/ranking';
