#!/usr/bin/env node
// Runs the TypeScript sources directly (transpile-only); see scripts/register-ts.js.
require('../../../scripts/register-ts');
require('../src/cli').main(process.argv);
