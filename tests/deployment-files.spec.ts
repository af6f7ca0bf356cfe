/**
 * The Dockerfile and docker-compose.yml cannot be built or started here (no Docker engine): these
 * checks compare them with the repository instead (scripts/check-dockerfile.ts; a few seconds).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, checkCompose, checkDockerfile, dockerIgnores, listWorkspaces } from '@histofed/harness';

/** The Dockerfile as it was: a hand-kept list of workspaces that missed libs/secagg. */
const HAND_LISTED = `FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
COPY apps/coordinator/package.json apps/coordinator/package.json
COPY apps/site-client/package.json apps/site-client/package.json
COPY libs/fl-core/package.json libs/fl-core/package.json
COPY libs/protocol/package.json libs/protocol/package.json
COPY libs/crypto/package.json libs/crypto/package.json
COPY libs/aggregation/package.json libs/aggregation/package.json
COPY libs/ml/package.json libs/ml/package.json
COPY libs/data/package.json libs/data/package.json
COPY libs/inference/package.json libs/inference/package.json
RUN npm ci --no-audit --no-fund
COPY . .
ENTRYPOINT ["npx"]
`;

/** docker-compose.yml as it was: published on every interface, a fixed accepted token, auto-approve. */
const UNSAFE_COMPOSE = readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8')
  .replace(/HISTOFED_ADMIN_TOKEN: .*/, 'HISTOFED_ADMIN_TOKEN: change-me-to-a-long-random-token\n      HISTOFED_AUTO_APPROVE: "true"')
  .replace(/ports: \["127\.0\.0\.1:8080:8080"\]/, 'ports: ["8080:8080"]');

describe('Dockerfile', () => {
  it('installs every npm workspace of package.json before npm ci', () => {
    const report = checkDockerfile(REPO_ROOT);
    expect(report.workspaces).toEqual(expect.arrayContaining(['apps/coordinator', 'apps/site-client', 'libs/secagg', 'libs/crypto']));
    expect(report.workspaces).toEqual(listWorkspaces(REPO_ROOT));
    expect(report.problems).toEqual([]);
  });

  it('names the workspace a hand-kept list forgets', () => {
    const report = checkDockerfile(REPO_ROOT, { dockerfile: HAND_LISTED });
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toMatch(/^Dockerfile: workspace libs\/secagg is missing: libs\/secagg\/package.json is not at \/app\/libs\/secagg\/package.json/);
  });

  it('sees through stages, flattening globs, a later WORKDIR and .dockerignore', () => {
    const glob = 'FROM node:20\nWORKDIR /app\nCOPY package.json package-lock.json ./\nCOPY apps/*/package.json libs/*/package.json ./\nRUN npm ci\n';
    expect(checkDockerfile(REPO_ROOT, { dockerfile: glob }).problems.length).toBe(listWorkspaces(REPO_ROOT).length);
    const whole = 'FROM node:20\nWORKDIR /srv\nCOPY . .\nRUN npm ci\n';
    expect(checkDockerfile(REPO_ROOT, { dockerfile: whole }).problems).toEqual([]);
    // Copied to /srv, installed from /other: npm ci would see none of it.
    expect(checkDockerfile(REPO_ROOT, { dockerfile: whole.replace('RUN npm ci', 'WORKDIR /other\nRUN npm ci') }).problems).toHaveLength(2 + listWorkspaces(REPO_ROOT).length);
    const ignored = checkDockerfile(REPO_ROOT, { dockerfile: whole, dockerignore: 'node_modules\nlibs/sec*\n' });
    expect(ignored.problems).toEqual([expect.stringMatching(/workspace libs\/secagg is missing.*\.dockerignore excludes it/)]);
    const staged = [
      'FROM node:20 AS manifests',
      'WORKDIR /app',
      'COPY apps apps',
      'FROM node:20',
      'WORKDIR /app',
      'COPY package.json package-lock.json ./',
      'COPY --from=manifests /app/apps apps',
      'RUN npm ci',
    ].join('\n');
    expect(checkDockerfile(REPO_ROOT, { dockerfile: staged }).problems.every((p) => /workspace libs\//.test(p))).toBe(true);
    expect(checkDockerfile(REPO_ROOT, { dockerfile: 'FROM node:20\nCOPY . .\n' }).problems).toEqual([expect.stringMatching(/never runs `npm ci`/)]);
    expect(dockerIgnores('**/node_modules\n.env\n.env.*\n!.env.example\n', 'apps/x/node_modules/y')).toBe(true);
    expect(dockerIgnores('.env\n.env.*\n!.env.example\n', '.env.example')).toBe(false);
  });

  it('is checked by scripts/check-dockerfile.ts, which exits 1 naming the missing workspace', () => {
    const ok = execFileSync(process.execPath, ['scripts/run-ts.js', 'scripts/check-dockerfile.ts'], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(ok).toMatch(/libs\/secagg/);
    const old = join(mkdtempSync(join(tmpdir(), 'hf-dockerfile-')), 'Dockerfile');
    writeFileSync(old, HAND_LISTED);
    let failure: { status?: number; stderr?: string } = {};
    try {
      execFileSync(process.execPath, ['scripts/run-ts.js', 'scripts/check-dockerfile.ts', '--dockerfile', old], { cwd: REPO_ROOT, encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      failure = e as { status?: number; stderr?: string };
    }
    expect(failure.status).toBe(1);
    expect(failure.stderr).toMatch(/workspace libs\/secagg is missing/);
  });
});

describe('docker-compose.yml', () => {
  it('is safe by default: loopback publish, token from .env, no auto-approve, private database, .env ignored', () => {
    expect(checkCompose(REPO_ROOT)).toEqual([]);
    const compose = readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8');
    expect(compose).toMatch(/ports: \["127\.0\.0\.1:8080:8080"\]/);
    expect(compose).toMatch(/HISTOFED_ADMIN_TOKEN: "\$\{HISTOFED_ADMIN_TOKEN:\?[^}]+\}"/);
    expect(compose).not.toMatch(/AUTO_APPROVE|auto-approve/);
  });

  it('names each unsafe default of the former file', () => {
    const problems = checkCompose(REPO_ROOT, UNSAFE_COMPOSE);
    expect(problems).toEqual([
      expect.stringMatching(/publishes "8080:8080" beyond this machine/),
      expect.stringMatching(/HISTOFED_ADMIN_TOKEN from \.env/),
      expect.stringMatching(/auto-approve is on/),
    ]);
    const publishedDb = readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8').replace('    image: postgres:15\n', '    image: postgres:15\n    ports: ["5432:5432"]\n');
    expect(checkCompose(REPO_ROOT, publishedDb)).toEqual([expect.stringMatching(/postgres service publishes ports/)]);
  });

  it('ships an .env.example with a placeholder token (which the coordinator refuses: coordinator-config.spec.ts)', () => {
    const example = /^HISTOFED_ADMIN_TOKEN=(.*)$/m.exec(readFileSync(join(REPO_ROOT, '.env.example'), 'utf8'))?.[1] ?? '';
    expect(example).toMatch(/^replace-me/);
  });
});
