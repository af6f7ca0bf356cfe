import { ValidationError } from '@histofed/fl-core';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { crc32 } from './checksum';
import { DataError } from './data-error';

/**
 * How a decoded image becomes a square: 'cover' keeps the aspect ratio and uses the centre square
 * (a 700x460 BreakHis image keeps its central 460x460, nuclei are not stretched); 'fill' stretches
 * the whole image to the square.
 */
export type ResizeMode = 'cover' | 'fill';

/**
 * Decodes a PNG (or any format sharp reads) to sRGB, 3 channels (alpha dropped, greyscale expanded),
 * resized to size x size, as row-major channels-last bytes. `input` is a path or the file's bytes;
 * `name` names the file in errors. Throws DataError naming the file when it cannot be decoded.
 */
export async function decodeSquareRgb(
  input: string | Buffer,
  size: number,
  mode: ResizeMode = 'cover',
  name: string = typeof input === 'string' ? input : '(buffer)',
): Promise<Buffer> {
  let result;
  try {
    result = await sharp(input)
      .removeAlpha()
      .toColourspace('srgb')
      .resize(size, size, mode === 'cover' ? { fit: 'cover', position: 'centre' } : { fit: 'fill' })
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new DataError(`Cannot decode image ${name}: ${(err as Error).message}`);
  }
  const { info, data } = result;
  if (info.width !== size || info.height !== size || info.channels !== 3) {
    throw new DataError(
      `Cannot decode image ${name}: got ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x3`,
    );
  }
  return data;
}

/**
 * Where image caches live when no directory is given: `$HISTOFED_CACHE_DIR/images`, else the
 * platform's user cache folder (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on
 * macOS, `%LOCALAPPDATA%` on Windows) + `/histofed/images`, else `.histofed/cache/images` below
 * the working directory.
 */
export function defaultImageCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HISTOFED_CACHE_DIR) return path.resolve(env.HISTOFED_CACHE_DIR, 'images');
  if (env.XDG_CACHE_HOME) return path.resolve(env.XDG_CACHE_HOME, 'histofed', 'images');
  let home = '';
  try {
    home = os.homedir();
  } catch {
    home = '';
  }
  if (process.platform === 'win32' && env.LOCALAPPDATA) return path.join(env.LOCALAPPDATA, 'histofed', 'images');
  if (home && process.platform === 'darwin') return path.join(home, 'Library', 'Caches', 'histofed', 'images');
  if (home) return path.join(home, '.cache', 'histofed', 'images');
  return path.resolve('.histofed', 'cache', 'images');
}

export interface ImageCacheOptions {
  /** Cache folder; created when first written. Default defaultImageCacheDir(). */
  readonly dir?: string;
  /** Resize mode, part of every key. Default 'cover' (what loadLabeledImages uses). */
  readonly fit?: ResizeMode;
  /**
   * Keep the (path, file size, mtime) -> content hash index in `<dir>/.../path-index.json` so a
   * second run does not hash every file again. Default true.
   */
  readonly persistIndex?: boolean;
}

/** Counters since the cache was created (or resetStats). */
export interface ImageCacheStats {
  /** Gets served from a valid cache entry on disk. */
  hits: number;
  /** Gets that found no valid entry and decoded the image. */
  misses: number;
  /** Gets that waited for a concurrent get of the same key instead of reading or decoding. */
  joined: number;
  /** sharp decodes done (equals misses unless a decode failed). */
  decodes: number;
  /** Files whose bytes were read and hashed because the path index did not vouch for them. */
  hashed: number;
  /** Content hashes taken from the path index (file size and mtime matched). */
  indexHits: number;
  /** Entries found corrupt or truncated, deleted and decoded again. */
  corrupt: number;
  /** Entries or index writes that failed (the decoded pixels were still returned). */
  writeErrors: number;
  /** Bytes of cache entries read (headers included). */
  bytesRead: number;
  /** Bytes of cache entries written (headers included). */
  bytesWritten: number;
}

/** Entry format version; bump it when the header or the decode pipeline changes. */
const FORMAT_VERSION = 1;
const MAGIC = 0x43494648; // "HFIC" read as little-endian u32
const HEADER_BYTES = 24;
/** Index entries written since the last flush that trigger a background flush. */
const AUTO_FLUSH_EVERY = 512;

interface IndexRecord {
  readonly size: number;
  readonly mtimeMs: number;
  readonly hash: string;
}

const emptyStats = (): ImageCacheStats => ({
  hits: 0,
  misses: 0,
  joined: 0,
  decodes: 0,
  hashed: 0,
  indexHits: 0,
  corrupt: 0,
  writeErrors: 0,
  bytesRead: 0,
  bytesWritten: 0,
});

/**
 * Decoded, resized images cached on disk, so a second epoch and a second run do not decode again.
 *
 * An entry is keyed by the SHA-256 of the file's bytes, the output size and the resize mode, so a
 * copy of a file under another path hits the same entry and a modified file misses. It holds raw
 * RGB bytes (size*size*3, row-major, channels last) after a 24-byte header (magic, format version,
 * width, height, channels, payload length, CRC-32 of the payload); entries are written to a temp
 * file and renamed, so readers never see half an entry. An entry that fails the header, length or
 * checksum test is deleted and the image decoded again; failing to write an entry (read-only or
 * full disk) only costs the next run a decode. Entries live below `<dir>/v1-vips<version>/`, so a
 * libvips upgrade, whose resampling may differ slightly, starts a fresh cache.
 *
 * Hashing every PNG on each run would cost almost as much as decoding it, so a small index maps
 * (absolute path, file size, mtime) to the content hash; it is trusted only when both the size and
 * the mtime match. Call flush() to persist it (iterateBatches and loadLabeledImages do).
 *
 * Concurrent gets of one key decode once. Safe to share between several processes: entries are
 * atomic and the index is merged with what is on disk when flushed. Returned arrays belong to the
 * caller.
 */
export class ImageCache {
  /** The folder given (or the default); entries live in a versioned subfolder. */
  readonly dir: string;
  readonly fit: ResizeMode;
  private readonly root: string;
  private readonly indexFile: string;
  private readonly persistIndex: boolean;
  private counters = emptyStats();
  private index = new Map<string, IndexRecord>();
  private indexLoad?: Promise<void>;
  private dirtyIndex = new Map<string, IndexRecord>();
  private flushChain: Promise<void> = Promise.resolve();
  private readonly inflight = new Map<string, Promise<Uint8Array>>();
  private readonly madeDirs = new Set<string>();
  private tempCounter = 0;

  constructor(options: ImageCacheOptions = {}) {
    this.dir = path.resolve(options.dir ?? defaultImageCacheDir());
    this.fit = options.fit ?? 'cover';
    if (this.fit !== 'cover' && this.fit !== 'fill') throw new ValidationError(`fit must be 'cover' or 'fill', got ${String(this.fit)}`);
    this.persistIndex = options.persistIndex ?? true;
    this.root = path.join(this.dir, `v${FORMAT_VERSION}-vips${sharp.versions.vips ?? 'unknown'}`);
    this.indexFile = path.join(this.root, 'path-index.json');
  }

  /** A snapshot of the counters. */
  stats(): ImageCacheStats {
    return { ...this.counters };
  }

  resetStats(): void {
    this.counters = emptyStats();
  }

  /**
   * The image at `image.path` decoded and resized to size x size: raw RGB bytes, row-major,
   * channels last (size*size*3). Served from the cache when a valid entry exists, else decoded with
   * sharp and stored. Throws DataError naming the file when it cannot be read or decoded (nothing
   * is cached then).
   */
  async get(image: { readonly path: string }, size: number): Promise<Uint8Array> {
    checkSize(size);
    const file = path.resolve(image.path);
    const { hash, bytes } = await this.contentHash(file);
    const key = `${hash}-${size}-${this.fit}`;
    const pending = this.inflight.get(key);
    if (pending) {
      this.counters.joined++;
      // The first caller gets the array itself and may modify it, so joiners copy it. Their
      // reactions were queued on `pending` before the first caller's async function resumed, so they
      // copy before that caller sees the array.
      return new Uint8Array(await pending);
    }
    const loading = this.load(hash, size, file, bytes);
    this.inflight.set(key, loading);
    try {
      return await loading;
    } finally {
      this.inflight.delete(key);
    }
  }

  /** Path of the entry the file at `image.path` (as it is now) and `size` map to. */
  async entryPath(image: { readonly path: string }, size: number): Promise<string> {
    checkSize(size);
    const { hash } = await this.contentHash(path.resolve(image.path));
    return this.entryFile(hash, size);
  }

  /**
   * Writes the path index (merged with the one on disk, so processes sharing the folder keep each
   * other's records). Never throws; a failed write counts in stats().writeErrors.
   */
  flush(): Promise<void> {
    this.flushChain = this.flushChain
      .then(() => this.writeIndex())
      .catch(() => {
        this.counters.writeErrors++;
      });
    return this.flushChain;
  }

  private entryFile(hash: string, size: number): string {
    return path.join(this.root, hash.slice(0, 2), `${hash}-${size}-${this.fit}.rgb`);
  }

  private async load(hash: string, size: number, file: string, bytes: Buffer | undefined): Promise<Uint8Array> {
    const entry = this.entryFile(hash, size);
    const cached = await this.readEntry(entry, size);
    if (cached) {
      this.counters.hits++;
      return cached;
    }
    this.counters.misses++;
    const rgb = await decodeSquareRgb(bytes ?? file, size, this.fit, file);
    this.counters.decodes++;
    await this.writeEntry(entry, rgb, size);
    // A plain Uint8Array view (not a Buffer, whose slice() does not copy), like a hit returns.
    return new Uint8Array(rgb.buffer, rgb.byteOffset, rgb.length);
  }

  /** Content hash of `file`, from the index when its size and mtime match, else by reading it. */
  private async contentHash(file: string): Promise<{ hash: string; bytes?: Buffer }> {
    await this.loadIndex();
    let st;
    try {
      st = await stat(file);
    } catch (err) {
      throw new DataError(`Cannot read image ${file}: ${(err as Error).message}`);
    }
    const known = this.index.get(file);
    if (known && known.size === st.size && known.mtimeMs === st.mtimeMs) {
      this.counters.indexHits++;
      return { hash: known.hash };
    }
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (err) {
      throw new DataError(`Cannot read image ${file}: ${(err as Error).message}`);
    }
    const hash = createHash('sha256').update(bytes).digest('hex');
    this.counters.hashed++;
    // The stat was taken before the read: if the file changes in between, its mtime will not match
    // the record next time and it is hashed again, never trusted with the wrong hash.
    const record = { size: st.size, mtimeMs: st.mtimeMs, hash };
    this.index.set(file, record);
    if (this.persistIndex) {
      this.dirtyIndex.set(file, record);
      if (this.dirtyIndex.size >= AUTO_FLUSH_EVERY) void this.flush();
    }
    return { hash, bytes };
  }

  private async readEntry(entry: string, size: number): Promise<Uint8Array | undefined> {
    let buf: Buffer;
    try {
      buf = await readFile(entry);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      // Unreadable (a folder in its place, permissions, ...): try to remove it and decode.
      this.counters.corrupt++;
      await rm(entry, { force: true, recursive: true }).catch(() => undefined);
      return undefined;
    }
    this.counters.bytesRead += buf.length;
    const payload = size * size * 3;
    const valid =
      buf.length === HEADER_BYTES + payload &&
      buf.readUInt32LE(0) === MAGIC &&
      buf[4] === FORMAT_VERSION &&
      buf[5] === 3 &&
      buf.readUInt32LE(8) === size &&
      buf.readUInt32LE(12) === size &&
      buf.readUInt32LE(16) === payload &&
      buf.readUInt32LE(20) === crc32(buf.subarray(HEADER_BYTES));
    if (!valid) {
      this.counters.corrupt++;
      await rm(entry, { force: true }).catch(() => undefined);
      return undefined;
    }
    return new Uint8Array(buf.buffer, buf.byteOffset + HEADER_BYTES, payload);
  }

  private async writeEntry(entry: string, rgb: Uint8Array, size: number): Promise<void> {
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32LE(MAGIC, 0);
    header[4] = FORMAT_VERSION;
    header[5] = 3;
    header.writeUInt32LE(size, 8);
    header.writeUInt32LE(size, 12);
    header.writeUInt32LE(rgb.length, 16);
    header.writeUInt32LE(crc32(rgb), 20);
    const ok = await this.writeAtomic(entry, [header, rgb]);
    if (ok) this.counters.bytesWritten += HEADER_BYTES + rgb.length;
  }

  /** Writes `parts` to a temp file beside `target` and renames it over `target`. */
  private async writeAtomic(target: string, parts: Uint8Array[]): Promise<boolean> {
    const folder = path.dirname(target);
    const temp = `${target}.${process.pid}-${++this.tempCounter}-${Date.now().toString(36)}.tmp`;
    try {
      if (!this.madeDirs.has(folder)) {
        await mkdir(folder, { recursive: true });
        this.madeDirs.add(folder);
      }
      await writeFile(temp, parts.length === 1 ? parts[0] : Buffer.concat(parts));
      await rename(temp, target);
      return true;
    } catch {
      this.counters.writeErrors++;
      await rm(temp, { force: true }).catch(() => undefined);
      return false;
    }
  }

  private loadIndex(): Promise<void> {
    if (!this.persistIndex) return Promise.resolve();
    this.indexLoad ??= readIndexFile(this.indexFile).then((records) => {
      for (const [file, record] of records) if (!this.index.has(file)) this.index.set(file, record);
    });
    return this.indexLoad;
  }

  private async writeIndex(): Promise<void> {
    if (!this.persistIndex || this.dirtyIndex.size === 0) return;
    const ours = this.dirtyIndex;
    this.dirtyIndex = new Map();
    const merged = await readIndexFile(this.indexFile);
    for (const [file, record] of ours) merged.set(file, record);
    const entries: Record<string, [number, number, string]> = {};
    for (const [file, r] of merged) entries[file] = [r.size, r.mtimeMs, r.hash];
    const text = JSON.stringify({ version: FORMAT_VERSION, entries });
    const ok = await this.writeAtomic(this.indexFile, [Buffer.from(text)]);
    if (!ok) for (const [file, record] of ours) if (!this.dirtyIndex.has(file)) this.dirtyIndex.set(file, record);
  }
}

function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > 8192) {
    throw new ValidationError(`image size must be an integer in [1, 8192], got ${size}`);
  }
}

/** Reads a path index; a missing, unreadable or malformed file (or record) counts as empty. */
async function readIndexFile(file: string): Promise<Map<string, IndexRecord>> {
  const out = new Map<string, IndexRecord>();
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch {
    return out;
  }
  if (!parsed || typeof parsed !== 'object') return out;
  const { version, entries } = parsed as { version?: unknown; entries?: unknown };
  if (version !== FORMAT_VERSION || !entries || typeof entries !== 'object') return out;
  for (const [key, value] of Object.entries(entries as Record<string, unknown>)) {
    if (
      Array.isArray(value) &&
      value.length === 3 &&
      typeof value[0] === 'number' &&
      typeof value[1] === 'number' &&
      typeof value[2] === 'string' &&
      /^[0-9a-f]{64}$/.test(value[2])
    ) {
      out.set(key, { size: value[0], mtimeMs: value[1], hash: value[2] });
    }
  }
  return out;
}
