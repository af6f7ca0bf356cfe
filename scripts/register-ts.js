// Lets Node run HistoFed's TypeScript sources without a build step: ts-node in transpile-only
// mode (type checking is `npm run typecheck`) and the @histofed/* path aliases of tsconfig.base.json.
const path = require('node:path');
const root = path.resolve(__dirname, '..');
const base = require(path.join(root, 'tsconfig.base.json'));

require('ts-node').register({
  transpileOnly: true,
  project: path.join(root, 'tsconfig.base.json'),
  compilerOptions: { module: 'commonjs', sourceMap: true },
});
require('tsconfig-paths').register({ baseUrl: root, paths: base.compilerOptions.paths });
