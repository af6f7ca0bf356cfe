export * from './backbone-source';
export * from './backbone';
export * from './rewire';
export * from './tile-classifier';
export * from './frozen-batch-norm';
export * from './fine-tune';
