import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { crc32 } from '../checksum';
import { defaultImageCacheDir } from '../image-cache';

/**
 * Rows of float32 values computed from one image (its tiles' features) cached on disk, so that a
 * site computes a backbone's tile features once, not every round or run.
 *
 * The caller names an entry by everything its values depend on (featureCacheKey: the image's
 * content hash, the backbone's weights, the cut, the tile geometry, the stain transform, the views'
 * seed and augmentation); the key is a SHA-256, so any change of any input is a miss. An entry is
 * a 32-byte header (magic, format version, rows, row length, payload bytes, CRC-32 of the payload)
 * and the little-endian float32 payload, written to a temporary file and renamed; a read that fails
 * the header, length or checksum test deletes the entry and counts as a miss (`corrupt`). A failed
 * write only costs a recomputation. Safe to share between processes.
 */
const FORMAT_VERSION = 1;
const MAGIC = 0x43464648; // "HFFC" read as little-endian u32
const HEADER_BYTES = 32;

export interface FeatureCacheStats {
  hits: number;
  misses: number;
  /** Entries found corrupt, truncated or of another shape, deleted (and counted as misses). */
  corrupt: number;
  writeErrors: number;
  bytesRead: number;
  bytesWritten: number;
}

/**
 * The feature cache that goes with an image cache folder: its `features/` subfolder (image
 * entries live in versioned subfolders of their own), so `--cache-dir DIR` moves both.
 */
export function featureCacheDirFor(imageCacheDir: string): string {
  return path.join(imageCacheDir, 'features');
}

/** Where feature caches live when no folder is given: `<default image cache>/features`. */
export function defaultFeatureCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return featureCacheDirFor(defaultImageCacheDir(env));
}

/** The SHA-256 (hex) of the canonical JSON of `parts` (object keys sorted). */
export function featureCacheKey(parts: unknown): string {
  return createHash('sha256').update(canonicalJson(parts)).digest('hex');
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export class FeatureCache {
  readonly dir: string;
  private readonly root: string;
  private counters: FeatureCacheStats = { hits: 0, misses: 0, corrupt: 0, writeErrors: 0, bytesRead: 0, bytesWritten: 0 };
  private temp = 0;

  constructor(options: { readonly dir?: string } = {}) {
    this.dir = path.resolve(options.dir ?? defaultFeatureCacheDir());
    this.root = path.join(this.dir, `v${FORMAT_VERSION}`);
  }

  stats(): FeatureCacheStats {
    return { ...this.counters };
  }

  /** Path of the entry of `key`. */
  entryPath(key: string): string {
    checkKey(key);
    return path.join(this.root, key.slice(0, 2), `${key}.f32`);
  }

  /** The rows stored under `key` when a valid entry with rows of `rowLength` values exists. */
  async get(key: string, rowLength: number): Promise<{ rows: number; values: Float32Array } | undefined> {
    const file = this.entryPath(key);
    let buf: Buffer;
    try {
      buf = await readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.counters.corrupt++;
        await rm(file, { force: true, recursive: true }).catch(() => undefined);
      }
      this.counters.misses++;
      return undefined;
    }
    this.counters.bytesRead += buf.length;
    const rows = buf.length >= HEADER_BYTES ? buf.readUInt32LE(8) : -1;
    const payload = buf.length - HEADER_BYTES;
    const valid =
      buf.length >= HEADER_BYTES &&
      buf.readUInt32LE(0) === MAGIC &&
      buf[4] === FORMAT_VERSION &&
      buf.readUInt32LE(12) === rowLength &&
      buf.readUInt32LE(16) === payload &&
      payload === rows * rowLength * 4 &&
      buf.readUInt32LE(20) === crc32(buf.subarray(HEADER_BYTES));
    if (!valid) {
      this.counters.corrupt++;
      this.counters.misses++;
      await rm(file, { force: true }).catch(() => undefined);
      return undefined;
    }
    this.counters.hits++;
    // Copy into an aligned buffer (a Buffer's offset need not be a multiple of 4).
    const values = new Float32Array(rows * rowLength);
    new Uint8Array(values.buffer).set(buf.subarray(HEADER_BYTES));
    return { rows, values };
  }

  /** Stores `values` (rows x rowLength) under `key`; never throws (a failed write counts in stats). */
  async put(key: string, values: Float32Array, rowLength: number): Promise<void> {
    if (!Number.isInteger(rowLength) || rowLength < 1 || values.length % rowLength !== 0) {
      throw new ValidationError(`feature cache: ${values.length} values are not rows of ${rowLength}`);
    }
    const file = this.entryPath(key);
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32LE(MAGIC, 0);
    header[4] = FORMAT_VERSION;
    header.writeUInt32LE(values.length / rowLength, 8);
    header.writeUInt32LE(rowLength, 12);
    header.writeUInt32LE(bytes.length, 16);
    header.writeUInt32LE(crc32(bytes), 20);
    const temp = `${file}.${process.pid}-${++this.temp}.tmp`;
    try {
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(temp, Buffer.concat([header, bytes]));
      await rename(temp, file);
      this.counters.bytesWritten += HEADER_BYTES + bytes.length;
    } catch {
      this.counters.writeErrors++;
      await rm(temp, { force: true }).catch(() => undefined);
    }
  }
}

function checkKey(key: string): void {
  if (!/^[0-9a-f]{64}$/.test(key)) throw new ValidationError(`feature cache key must be a SHA-256 in hex, got ${JSON.stringify(key)}`);
}
