/**
 * A finished run's exported model directory (`<data dir>/models/<run id>/`, written by
 * ModelExporter) as one tar archive (issue 17): every member's saved model with its manifest, the
 * ensemble manifest and the model readings, streamed file by file (a chunk at a time, never a
 * whole file in memory) with tar-stream.
 *
 * Only what lies under the directory travels: directories and regular files found by walking it
 * without following symbolic links (a link, a socket or a device is left out), each file opened with
 * O_NOFOLLOW and checked to be a regular file whose real path is the one walked to, so a link put in
 * the tree — even between the walk and the read — cannot make it read another file. Temporary
 * leftovers of atomic writes (`*.tmp`, `*.tmp-<pid>`) are left out too.
 */
import { constants } from 'node:fs';
import { open, readdir, realpath } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { pack as tarPack, type Pack } from 'tar-stream';

type Sink = ReturnType<Pack['entry']>;

/** One archive member: its name inside the archive (posix, relative) and where it is on disk. */
export interface ArchiveEntry {
  readonly name: string;
  readonly path: string;
  readonly type: 'file' | 'directory';
}

/** A saved model directory is two levels deep (the run, its members); anything deeper is not the exporter's. */
const MAX_DEPTH = 4;
const TEMPORARY = /\.tmp(-\d+)?$/;
const CHUNK = 256 * 1024;

/**
 * The directories and regular files under `root`, sorted by name, directories before what they
 * hold; symbolic links and anything that is not a directory or a regular file are left out.
 */
export async function listArchiveEntries(root: string): Promise<ArchiveEntry[]> {
  const out: ArchiveEntry[] = [];
  const walk = async (dir: string, rel: string, depth: number): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const name = rel ? posix.join(rel, e.name) : e.name;
      const path = join(dir, e.name);
      // Dirent types come from lstat: a symbolic link is neither a directory nor a file here.
      if (e.isDirectory() && depth < MAX_DEPTH) {
        out.push({ name, path, type: 'directory' });
        await walk(path, name, depth + 1);
      } else if (e.isFile() && !TEMPORARY.test(e.name)) {
        out.push({ name, path, type: 'file' });
      }
    }
  };
  await walk(root, '', 1);
  return out;
}

/** Resolves when the sink may take more (or is gone: the caller then sees the pack destroyed). */
function drained(sink: Sink): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      sink.removeListener('drain', done);
      sink.removeListener('close', done);
      resolve();
    };
    sink.once('drain', done);
    sink.once('close', done);
  });
}

/** Copies one file into the archive: opened without following links, checked, read a chunk at a time. */
async function addFile(pack: Pack, realRoot: string, prefix: string, entry: ArchiveEntry): Promise<void> {
  // The real path must be the walked one: no link anywhere between the root and the file.
  const expected = join(realRoot, ...entry.name.split('/'));
  if ((await realpath(entry.path)) !== expected) throw new Error(`${entry.name}: not a file under the model directory`);
  const handle = await open(entry.path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new Error(`${entry.name}: not a regular file`);
    const size = st.size;
    await new Promise<void>((resolve, reject) => {
      const sink = pack.entry({ name: posix.join(prefix, entry.name), type: 'file', size, mode: 0o644, mtime: st.mtime }, (err) => (err ? reject(err) : resolve()));
      void (async () => {
        let offset = 0;
        while (offset < size) {
          if (pack.destroyed) return;
          const buf = Buffer.allocUnsafe(Math.min(CHUNK, size - offset));
          const { bytesRead } = await handle.read(buf, 0, buf.length, offset);
          if (bytesRead === 0) throw new Error(`${entry.name} shrank while it was archived`);
          offset += bytesRead;
          if (!sink.write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))) await drained(sink);
        }
        sink.end(undefined);
      })().catch((e: unknown) => sink.destroy(e instanceof Error ? e : new Error(String(e))));
    });
  } finally {
    await handle.close();
  }
}

/**
 * The tar archive of `root`'s entries (listArchiveEntries), each under `prefix/` (the run id: the
 * archive unpacks to one directory, the ensemble). The stream ends with the archive, or is
 * destroyed with the error that stopped it (a file that vanished or changed into a link).
 */
export function packModelDirectory(root: string, entries: readonly ArchiveEntry[], prefix: string): Pack {
  const pack = tarPack();
  void (async () => {
    const realRoot = await realpath(root);
    pack.entry({ name: prefix, type: 'directory', mode: 0o755 });
    for (const e of entries) {
      if (pack.destroyed) return;
      if (e.type === 'directory') pack.entry({ name: posix.join(prefix, e.name), type: 'directory', mode: 0o755 });
      else await addFile(pack, realRoot, prefix, e);
    }
    pack.finalize();
  })().catch((e: unknown) => pack.destroy(e instanceof Error ? e : new Error(String(e))));
  return pack;
}
