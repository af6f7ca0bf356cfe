import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join, posix } from 'node:path';

/**
 * Checks of the deployment files that no test would otherwise exercise (the development machines
 * have no Docker engine): the Dockerfile installs every npm workspace before `npm ci`, and
 * docker-compose.yml is safe by default. Run by `node scripts/run-ts.js scripts/check-dockerfile.ts`
 * and by tests/deployment-files.spec.ts (so by `npm test` and CI).
 */

export interface DockerfileReport {
  /** Workspaces of the root package.json ("apps/coordinator", ...). */
  readonly workspaces: string[];
  /** One line per problem, naming the workspace or file; empty when the Dockerfile is right. */
  readonly problems: string[];
}

export interface DockerfileInputs {
  /** Dockerfile text (default: ROOT/Dockerfile). */
  readonly dockerfile?: string;
  /** .dockerignore text (default: ROOT/.dockerignore, or none). */
  readonly dockerignore?: string;
}

/** The workspace folders the root package.json's "workspaces" patterns name (each with a package.json). */
export function listWorkspaces(root: string): string[] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { workspaces?: string[] | { packages?: string[] } };
  const patterns = Array.isArray(pkg.workspaces) ? pkg.workspaces : (pkg.workspaces?.packages ?? []);
  const found: string[] = [];
  for (const raw of patterns) {
    const pattern = posix.normalize(raw).replace(/\/$/, '');
    const star = pattern.indexOf('*');
    if (star < 0) {
      if (existsSync(join(root, pattern, 'package.json'))) found.push(pattern);
      continue;
    }
    if (!pattern.endsWith('/*') || pattern.indexOf('*') !== pattern.length - 1) {
      throw new Error(`package.json workspaces: the pattern "${raw}" is not supported by this check (only "dir/*" and plain folders)`);
    }
    const dir = pattern.slice(0, -2);
    if (!existsSync(join(root, dir))) continue;
    for (const name of readdirSync(join(root, dir)).sort()) {
      if (statSync(join(root, dir, name)).isDirectory() && existsSync(join(root, dir, name, 'package.json'))) found.push(`${dir}/${name}`);
    }
  }
  return found;
}

interface CopyInstruction {
  readonly from?: string;
  readonly sources: string[];
  /** Absolute destination in the image. */
  readonly dest: string;
  readonly destIsDir: boolean;
}

interface Stage {
  readonly name?: string;
  readonly copies: CopyInstruction[];
  /** Copies before the first `RUN npm ci` / `npm install` of the stage (all of them if there is none). */
  copiesBeforeInstall?: CopyInstruction[];
  /** WORKDIR at the install step (or at the end of the stage). */
  installWorkdir?: string;
  workdir: string;
}

/** The instructions of a Dockerfile (comments dropped, continuation lines joined). */
function instructions(text: string): { keyword: string; args: string }[] {
  const out: { keyword: string; args: string }[] = [];
  let pending = '';
  for (const line of text.split(/\r?\n/)) {
    if (/^\s*#/.test(line) && pending === '') continue;
    if (/^\s*#/.test(line)) continue; // a comment inside a continued instruction
    const continued = /\\\s*$/.test(line);
    pending += (pending ? ' ' : '') + line.replace(/\\\s*$/, '').trim();
    if (continued) continue;
    const m = /^(\w+)\s*(.*)$/.exec(pending.trim());
    if (m) out.push({ keyword: m[1].toUpperCase(), args: m[2] });
    pending = '';
  }
  return out;
}

function parseCopy(args: string, workdir: string): CopyInstruction {
  let rest = args.trim();
  let from: string | undefined;
  for (;;) {
    const flag = /^--([a-z-]+)(?:=(\S+))?\s+/.exec(rest);
    if (!flag) break;
    if (flag[1] === 'from') from = flag[2];
    rest = rest.slice(flag[0].length);
  }
  const parts: string[] = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : rest.split(/\s+/).filter(Boolean);
  const rawDest = parts[parts.length - 1] ?? '.';
  const sources = parts.slice(0, -1).map((s) => posix.normalize(s.replace(/^\.\//, '')).replace(/\/$/, '') || '.');
  return {
    from,
    sources,
    dest: posix.resolve(workdir, rawDest),
    destIsDir: rawDest.endsWith('/') || rawDest === '.' || sources.length > 1,
  };
}

function parseStages(text: string): Stage[] {
  const stages: Stage[] = [];
  for (const { keyword, args } of instructions(text)) {
    if (keyword === 'FROM') {
      const m = /\bAS\s+(\S+)\s*$/i.exec(args);
      stages.push({ name: m?.[1], copies: [], workdir: '/' });
      continue;
    }
    const stage = stages[stages.length - 1];
    if (!stage) continue;
    if (keyword === 'WORKDIR') stage.workdir = posix.resolve(stage.workdir, args.trim());
    else if (keyword === 'COPY' || keyword === 'ADD') stage.copies.push(parseCopy(args, stage.workdir));
    else if (keyword === 'RUN' && !stage.copiesBeforeInstall && /\bnpm\s+(ci|install|i)\b/.test(args)) {
      stage.copiesBeforeInstall = [...stage.copies];
      stage.installWorkdir = stage.workdir;
    }
  }
  return stages;
}

const isGlob = (s: string) => /[*?[]/.test(s);

/** A Go filepath.Match-like glob (with "**") as a regular expression over slash-separated paths. */
function globRegex(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
      if (glob[i + 1] === '/') i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i);
      re += end > i ? glob.slice(i, end + 1).replace('[!', '[^') : '\\[';
      if (end > i) i = end;
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Whether .dockerignore keeps `path` (context-relative) out of the build context. */
export function dockerIgnores(dockerignore: string, path: string): boolean {
  const rules = dockerignore
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = posix.normalize((negate ? l.slice(1) : l).trim().replace(/^\//, '')).replace(/\/$/, '');
      return { negate, re: globRegex(pattern) };
    });
  // A path is out if it or one of its parent folders matches; the last matching rule wins.
  const prefixes = path.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  let ignored = false;
  for (const rule of rules) if (prefixes.some((p) => rule.re.test(p))) ignored = !rule.negate;
  return ignored;
}

/** Where a COPY puts `path` (a context path, or an image path of the --from stage), or null. */
function landing(copy: CopyInstruction, path: string): string | null {
  for (const src of copy.sources) {
    if (src === '.' || src === '/') return posix.join(copy.dest, path.replace(/^\//, ''));
    const s = src.replace(/\/$/, '');
    if (isGlob(s)) {
      // Docker copies each match into dest by its base name: a glob flattens folders.
      if (globRegex(s).test(path)) return copy.destIsDir ? posix.join(copy.dest, basename(path)) : copy.dest;
      continue;
    }
    if (path === s) return copy.destIsDir ? posix.join(copy.dest, basename(s)) : copy.dest;
    if (path.startsWith(`${s}/`)) return posix.join(copy.dest, path.slice(s.length + 1));
  }
  return null;
}

/** The image paths at which context file `file` exists in `stage` (through `copies`), following COPY --from. */
function imagePaths(file: string, stages: Stage[], copies: CopyInstruction[], ignored: (p: string) => boolean): string[] {
  const out: string[] = [];
  for (const copy of copies) {
    if (copy.from === undefined) {
      if (ignored(file)) continue;
      const at = landing(copy, file);
      if (at) out.push(at);
      continue;
    }
    const source = stages.find((s) => s.name === copy.from) ?? stages[Number(copy.from)];
    if (!source) continue; // an external image
    for (const inSource of imagePaths(file, stages, source.copies, ignored)) {
      const at = landing(copy, inSource.replace(/^\//, '')) ?? landing(copy, inSource);
      if (at) out.push(at);
    }
  }
  return out;
}

/**
 * Checks that the final stage of the Dockerfile has every workspace's package.json (and the root
 * package.json and package-lock.json) in place, under its WORKDIR, when it runs `npm ci`.
 */
export function checkDockerfile(root: string, inputs: DockerfileInputs = {}): DockerfileReport {
  const workspaces = listWorkspaces(root);
  const text = inputs.dockerfile ?? readFileSync(join(root, 'Dockerfile'), 'utf8');
  const dockerignore = inputs.dockerignore ?? (existsSync(join(root, '.dockerignore')) ? readFileSync(join(root, '.dockerignore'), 'utf8') : '');
  const ignored = (p: string) => dockerIgnores(dockerignore, p);
  const stages = parseStages(text);
  const final = stages[stages.length - 1];
  if (!final) return { workspaces, problems: ['Dockerfile: no FROM instruction'] };
  if (!final.copiesBeforeInstall || final.installWorkdir === undefined) {
    return { workspaces, problems: ['Dockerfile: the final stage never runs `npm ci` (or `npm install`)'] };
  }
  const workdir = final.installWorkdir;
  const problems: string[] = [];
  const needs = (file: string) => imagePaths(file, stages, final.copiesBeforeInstall ?? [], ignored).includes(posix.join(workdir, file));
  for (const file of ['package.json', 'package-lock.json']) {
    if (!needs(file)) problems.push(`Dockerfile: ${file} is not at ${posix.join(workdir, file)} when \`npm ci\` runs`);
  }
  for (const ws of workspaces) {
    const file = `${ws}/package.json`;
    if (needs(file)) continue;
    const why = ignored(file) ? ' (.dockerignore excludes it)' : '';
    problems.push(
      `Dockerfile: workspace ${ws} is missing: ${file} is not at ${posix.join(workdir, file)} when \`npm ci\` runs${why}. ` +
        'Copy it (a COPY glob flattens folders), or copy its parent folder as the manifests stage does.',
    );
  }
  return { workspaces, problems };
}

/** The lines of one top-level service of a compose file (2-space indented under `services:`). */
function serviceBlock(compose: string, service: string): string[] | null {
  const lines = compose.split(/\r?\n/);
  const start = lines.findIndex((l) => new RegExp(`^  ${service}:\\s*(#.*)?$`).test(l));
  if (start < 0) return null;
  const block: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (/^\s*(#.*)?$/.test(line)) continue;
    if (!/^ {3,}/.test(line)) break;
    block.push(line);
  }
  return block;
}

/** The published ports of a service block (`ports: [...]` or a `- ...` list). */
function publishedPorts(block: string[]): string[] {
  const i = block.findIndex((l) => /^\s+ports:/.test(l));
  if (i < 0) return [];
  const inline = /ports:\s*\[(.*)\]/.exec(block[i]);
  const strip = (s: string) => s.trim().replace(/^["']|["']$/g, '');
  if (inline) return inline[1].split(',').map(strip).filter(Boolean);
  const indent = /^\s*/.exec(block[i])?.[0].length ?? 0;
  const items: string[] = [];
  for (const line of block.slice(i + 1)) {
    if ((/^\s*/.exec(line)?.[0].length ?? 0) <= indent) break;
    const m = /^\s*-\s*(.+)$/.exec(line);
    if (m) items.push(strip(m[1]));
  }
  return items;
}

/**
 * docker-compose.yml is safe by default: the coordinator is published on loopback only, its admin
 * token comes from .env (compose refuses to start without it), nothing turns auto-approve on, the
 * database is not published, and .env stays out of git and of the image (.env.example documents it).
 */
export function checkCompose(root: string, compose = readFileSync(join(root, 'docker-compose.yml'), 'utf8')): string[] {
  const problems: string[] = [];
  const coordinator = serviceBlock(compose, 'coordinator');
  if (!coordinator) return ['docker-compose.yml: no coordinator service'];
  const ports = publishedPorts(coordinator);
  for (const p of ports) {
    if (!/^(127\.0\.0\.1|\[::1\]):\d+:\d+(\/tcp)?$/.test(p)) {
      problems.push(`docker-compose.yml: the coordinator publishes "${p}" beyond this machine (publish it as "127.0.0.1:8080:8080")`);
    }
  }
  const token = coordinator.find((l) => /HISTOFED_ADMIN_TOKEN/.test(l));
  if (!token || !/HISTOFED_ADMIN_TOKEN:\s*["']?\$\{HISTOFED_ADMIN_TOKEN:\?[^}]+\}["']?\s*$/.test(token.trim())) {
    problems.push('docker-compose.yml: the coordinator must take HISTOFED_ADMIN_TOKEN from .env as ${HISTOFED_ADMIN_TOKEN:?message} (no token in the file)');
  }
  if (/HISTOFED_AUTO_APPROVE\s*[:=]\s*["']?true/i.test(compose) || /--auto-approve/.test(compose)) {
    problems.push('docker-compose.yml: auto-approve is on (approve the sites through the admin API instead)');
  }
  for (const db of ['postgres']) {
    const block = serviceBlock(compose, db);
    if (block && publishedPorts(block).length > 0) problems.push(`docker-compose.yml: the ${db} service publishes ports (keep it on the compose network)`);
  }
  const example = existsSync(join(root, '.env.example')) ? readFileSync(join(root, '.env.example'), 'utf8') : '';
  if (!/^HISTOFED_ADMIN_TOKEN=/m.test(example)) problems.push('.env.example: missing, or without a HISTOFED_ADMIN_TOKEN= line');
  const listed = (file: string) => (existsSync(join(root, file)) ? readFileSync(join(root, file), 'utf8') : '');
  if (!/^\/?\.env\s*$/m.test(listed('.gitignore'))) problems.push('.gitignore: .env (which holds the admin token) is not ignored');
  if (!dockerIgnores(listed('.dockerignore'), '.env')) problems.push('.dockerignore: .env (which holds the admin token) would be copied into the image');
  return problems;
}
