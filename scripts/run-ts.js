#!/usr/bin/env node
// Usage: node scripts/run-ts.js path/to/script.ts [args...]
require('./register-ts');
const path = require('node:path');
const script = process.argv[2];
if (!script) {
  process.stderr.write('usage: node scripts/run-ts.js SCRIPT.ts [args...]\n');
  process.exit(2);
}
process.argv.splice(1, 2, path.resolve(script));
require(path.resolve(script));
