export * from './bags';
export * from './gated-attention';
