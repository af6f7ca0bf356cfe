export * from './version';
export * from './schemas';
export * from './messages';
export * from './update-envelope';
export * from './validate';
