module.exports = {
  ...require('../../jest.preset.cjs'),
  displayName: require('./project.json').name,
  rootDir: __dirname,
};
