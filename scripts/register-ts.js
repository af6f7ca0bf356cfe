// Lets Node run HistoFed's TypeScript sources without a build step: each .ts file is transpiled
// (TypeScript's transpileModule with tsconfig.base.json's options: no type checking, which is
// `npm run typecheck`, the same output as ts-node's transpile-only mode) and the result is kept in
// a cache on disk keyed by the file's content, the compiler version and the options, so a process
// start does not transpile the sources again (~2 s of each CLI, coordinator and site start).
// Stack traces point into the .ts files (inline source maps). The @histofed/* path aliases come
// from tsconfig.base.json. HISTOFED_TS_CACHE=DIR moves the cache, HISTOFED_TS_CACHE=off disables it.
const crypto = require('node:crypto');
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const ts = require('typescript');

const root = path.resolve(__dirname, '..');
const base = require(path.join(root, 'tsconfig.base.json'));

const { options, errors } = ts.convertCompilerOptionsFromJson(
  { ...base.compilerOptions, module: 'commonjs', sourceMap: false, inlineSourceMap: true, inlineSources: false, declaration: false, noEmit: false },
  root,
);
if (errors.length > 0) throw new Error(`tsconfig.base.json: ${errors.map((e) => ts.flattenDiagnosticMessageText(e.messageText, ' ')).join('; ')}`);

const setting = process.env.HISTOFED_TS_CACHE;
const cacheDir = setting === 'off' ? null : setting || path.join(root, 'node_modules', '.cache', 'histofed-ts');
const salt = crypto.createHash('sha256').update(JSON.stringify([1, ts.version, options])).digest('hex');

function transpile(source, filename) {
  const key = crypto.createHash('sha256').update(salt).update(filename).update('\0').update(source).digest('hex');
  const file = cacheDir && path.join(cacheDir, key.slice(0, 2), `${key}.js`);
  if (file) {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch {
      // not cached yet
    }
  }
  const out = ts.transpileModule(source, { compilerOptions: options, fileName: filename }).outputText;
  if (file) {
    // Written through a unique temporary file and a rename: concurrent processes never read half a file.
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
      fs.writeFileSync(tmp, out);
      fs.renameSync(tmp, file);
    } catch {
      // a read-only or full disk only costs the next start the transpilation
    }
  }
  return out;
}

if (!Module._extensions['.ts']) {
  Module._extensions['.ts'] = function loadTypeScript(module, filename) {
    module._compile(transpile(fs.readFileSync(filename, 'utf8'), filename), filename);
  };
}
process.setSourceMapsEnabled(true);
// Worker threads do not inherit require hooks: libs/ml's training workers load this file too.
process.env.HISTOFED_TS_REGISTER = __filename;
require('tsconfig-paths').register({ baseUrl: root, paths: base.compilerOptions.paths });
