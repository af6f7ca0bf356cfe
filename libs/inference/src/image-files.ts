/**
 * The images a prediction reads: files, folders (searched recursively) and glob patterns, in a
 * stable order, each once. Files named explicitly are taken whatever their name (the decoder
 * decides); inside folders and globs only image extensions are taken. What cannot be used is
 * returned as a failure with its reason, never thrown.
 */
import { existsSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import * as path from 'node:path';
import { glob, isDynamicPattern } from 'tinyglobby';

/** Extensions taken from folders and globs (case-insensitive). */
export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.tif', '.tiff'] as const;

export interface FileFailure {
  readonly file: string;
  readonly reason: string;
}

export interface CollectedFiles {
  /** Absolute paths, deduplicated, in the order given (folders and globs sorted). */
  readonly files: string[];
  readonly failures: FileFailure[];
}

const isImageName = (name: string) => (IMAGE_EXTENSIONS as readonly string[]).includes(path.extname(name).toLowerCase());

async function walk(dir: string, out: string[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) await walk(full, out);
    else if (e.isFile() && isImageName(e.name)) out.push(full);
  }
}

/**
 * Expands `inputs` (relative to `cwd`). At most `maxFiles` files are taken; beyond that the
 * remaining inputs are reported once as a failure (a typo like `/` must not queue a whole disk).
 */
export async function collectImageFiles(inputs: readonly string[], o: { readonly cwd?: string; readonly maxFiles?: number } = {}): Promise<CollectedFiles> {
  const cwd = o.cwd ?? process.cwd();
  const maxFiles = o.maxFiles ?? 100_000;
  const files: string[] = [];
  const seen = new Set<string>();
  const failures: FileFailure[] = [];
  const take = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    files.push(file);
  };
  for (const input of inputs) {
    if (files.length >= maxFiles) {
      failures.push({ file: input, reason: `not read: more than ${maxFiles} files were given` });
      continue;
    }
    const full = path.resolve(cwd, input);
    let found: string[];
    if (existsSync(full)) {
      const st = statSync(full);
      if (st.isDirectory()) {
        found = [];
        await walk(full, found);
        if (found.length === 0) failures.push({ file: input, reason: `folder holds no image (${IMAGE_EXTENSIONS.join(', ')})` });
      } else if (st.isFile()) {
        found = [full];
      } else {
        failures.push({ file: input, reason: 'not a regular file or folder' });
        continue;
      }
    } else if (isDynamicPattern(input)) {
      found = (await glob(input, { cwd, absolute: true, onlyFiles: true, dot: false })).filter(isImageName).sort();
      if (found.length === 0) failures.push({ file: input, reason: 'the pattern matches no image file' });
    } else {
      failures.push({ file: input, reason: 'no such file or folder' });
      continue;
    }
    for (const f of found) {
      if (files.length >= maxFiles) {
        failures.push({ file: input, reason: `partly read: more than ${maxFiles} files were given` });
        break;
      }
      take(f);
    }
  }
  return { files, failures };
}
