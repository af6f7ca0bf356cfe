export * from './coordinator-app';
export * from './config/coordinator-config';
export * from './persistence/records';
export { runConfigInputSchema } from './admin/run-config.schema';
export type { RunConfigInput } from './admin/run-config.schema';
