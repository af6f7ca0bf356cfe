import { chmodSync, lstatSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import { join } from 'node:path';

/** Permission bits that let the group or other users read, write or enter. */
const GROUP_AND_OTHER = 0o077;

/** What makePrivate changed: how many entries, and a few of their paths with the old and new modes. */
export interface PermissionFixes {
  readonly files: number;
  readonly directories: number;
  readonly examples: readonly { readonly path: string; readonly from: string; readonly to: string }[];
}

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');

/**
 * New files of this process are private to its user (umask 077). PGlite's own chmods ignore the
 * umask (see makePrivate); this covers everything else the coordinator writes (key file, caches).
 * Worker threads cannot change the umask: there it is left as it is.
 */
export function usePrivateUmask(): void {
  if (isMainThread) process.umask(0o077);
}

/**
 * Creates `dir` (and its parents) if needed and makes it 0700; returns whether an existing mode was
 * changed. A symbolic link to a directory is followed (the data directory may be one).
 */
export function ensurePrivateDir(dir: string): boolean {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const mode = statSync(dir).mode;
  if ((mode & 0o777) === 0o700) return false;
  chmodSync(dir, 0o700);
  return true;
}

/**
 * Takes the group's and others' permission bits off every file and directory under `root` (and
 * root itself), without following symbolic links below root. PGlite writes the files of a new database
 * (initdb) with an explicit chmod to 0666 and rewrites `pg_internal.init` as 0644, whatever the
 * umask: this is run on the data directory at start-up, before and after the database opens.
 */
export function makePrivate(root: string, maxExamples = 5): PermissionFixes {
  let files = 0;
  let directories = 0;
  const examples: { path: string; from: string; to: string }[] = [];
  const visit = (path: string, isRoot = false) => {
    let st;
    try {
      st = isRoot ? statSync(path) : lstatSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // removed meanwhile (e.g. a temporary file)
      throw e;
    }
    if (st.isSymbolicLink()) return;
    if (st.mode & GROUP_AND_OTHER) {
      const to = st.mode & 0o7777 & ~GROUP_AND_OTHER;
      chmodSync(path, to);
      if (st.isDirectory()) directories++;
      else files++;
      if (examples.length < maxExamples) examples.push({ path, from: octal(st.mode), to: octal(to) });
    }
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(root, true);
  return { files, directories, examples };
}

/**
 * Every file and directory under `root` (and root itself) that the group or other users may read,
 * write or enter, as "<mode> <path>" (symbolic links are not followed): empty when the tree is private.
 */
export function entriesOpenToOthers(root: string): string[] {
  const found: string[] = [];
  const visit = (path: string) => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return;
    if (st.mode & GROUP_AND_OTHER) found.push(`${(st.mode & 0o777).toString(8)} ${path}`);
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(root);
  return found;
}
