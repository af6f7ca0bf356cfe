// Shared Jest settings for every project: ts-jest transpiles TypeScript (type checking is
// `npm run typecheck`), and @histofed/* imports resolve to the libraries' sources.
const path = require('node:path');

const root = __dirname;
const libs = ['fl-core', 'protocol', 'crypto', 'aggregation', 'secagg', 'ml', 'data', 'inference'];
const apps = ['coordinator', 'site-client'];

const moduleNameMapper = {};
for (const lib of libs) moduleNameMapper[`^@histofed/${lib}$`] = path.join(root, 'libs', lib, 'src', 'index.ts');
moduleNameMapper['^@histofed/harness$'] = path.join(root, 'scripts', 'lib', 'index.ts');
for (const app of apps) moduleNameMapper[`^@histofed/${app}$`] = path.join(root, 'apps', app, 'src', 'index.ts');

module.exports = {
  testEnvironment: 'node',
  moduleFileExtensions: ['ts', 'js', 'json'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: path.join(root, 'tsconfig.spec.json') }],
  },
  moduleNameMapper,
  testMatch: ['**/*.spec.ts'],
};
