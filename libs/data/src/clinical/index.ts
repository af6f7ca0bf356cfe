export * from './clinical-table';
export * from './clinical-encoding';
export * from './synthetic-clinical';
export * from './clinical-rows';
