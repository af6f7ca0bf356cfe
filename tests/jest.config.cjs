module.exports = {
  ...require('../jest.preset.cjs'),
  displayName: 'tests',
  rootDir: __dirname,
  // End-to-end tests start real processes; run them one at a time.
  maxWorkers: 1,
  testTimeout: 600000,
};
