export * from './site-config';
export * from './site-client';
export * from './outbox';
