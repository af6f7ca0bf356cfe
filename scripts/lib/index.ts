export * from './processes';
export * from './admin-client';
export * from './federation-harness';
export * from './rogue-site';
export * from './deployment-checks';
