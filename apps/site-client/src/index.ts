export * from './site-config';
export * from './site-client';
export * from './outbox';
export * from './final-models';
export * from './coordinator-key-pin';
