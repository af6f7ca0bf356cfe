/**
 * Checks the deployment files against the repository (there is no Docker engine to build them here):
 *   - the Dockerfile has every npm workspace's package.json in place when it runs `npm ci`
 *     (compared with the root package.json's "workspaces"),
 *   - docker-compose.yml is safe by default (loopback publish, admin token from .env, no auto-approve).
 * Usage: node scripts/run-ts.js scripts/check-dockerfile.ts [--dockerfile FILE] [--compose FILE]
 * Exits 1 naming each problem. `npm test` runs it through tests/deployment-files.spec.ts.
 */
import { readFileSync } from 'node:fs';
import { REPO_ROOT } from './lib/processes';
import { checkCompose, checkDockerfile } from './lib/deployment-checks';

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const dockerfile = option('--dockerfile');
const compose = option('--compose');
const report = checkDockerfile(REPO_ROOT, dockerfile ? { dockerfile: readFileSync(dockerfile, 'utf8') } : {});
const problems = [...report.problems, ...checkCompose(REPO_ROOT, compose ? readFileSync(compose, 'utf8') : undefined)];
if (problems.length > 0) {
  for (const p of problems) process.stderr.write(`${p}\n`);
  process.exit(1);
}
process.stdout.write(`Dockerfile: all ${report.workspaces.length} workspaces reach \`npm ci\` (${report.workspaces.join(', ')}); docker-compose.yml: safe defaults\n`);
