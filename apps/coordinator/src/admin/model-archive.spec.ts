import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extract } from 'tar-stream';
import { listArchiveEntries, packModelDirectory } from './model-archive';

const RUN = '3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b';

interface Extracted {
  readonly name: string;
  readonly type: string;
  readonly mode: number;
  readonly bytes: Buffer;
}

/** Reads a whole archive back with tar-stream's parser (the test's side: small archives). */
async function unpack(archive: ReturnType<typeof packModelDirectory>): Promise<Extracted[]> {
  const out: Extracted[] = [];
  const ex = extract();
  const done = (async () => {
    for await (const entry of ex) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      out.push({ name: entry.header.name, type: entry.header.type, mode: entry.header.mode, bytes: Buffer.concat(chunks) });
    }
  })();
  const piped = new Promise<void>((resolve, reject) => archive.pipe(ex, (err) => (err ? reject(err) : resolve())));
  await Promise.all([done, piped]);
  return out;
}

describe('a run\'s saved models as a tar archive', () => {
  let root: string;
  let outside: string;
  let dir: string;
  const weights = randomBytes(700_000); // several chunks

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'hf-archive-'));
    outside = join(root, 'secret.txt');
    writeFileSync(outside, 'not a model');
    dir = join(root, 'models', RUN);
    for (const m of ['global', 'site-1']) {
      mkdirSync(join(dir, m), { recursive: true });
      writeFileSync(join(dir, m, 'histofed-model.json'), `{"member":"${m}"}\n`);
      writeFileSync(join(dir, m, 'model.json'), '{}');
      writeFileSync(join(dir, m, 'weights.bin'), m === 'global' ? weights : Buffer.alloc(0));
    }
    writeFileSync(join(dir, 'histofed-ensemble.json'), '{"members":["global","site-1"]}');
    // What must not travel: temporary leftovers, links to files and directories outside, a link inside.
    writeFileSync(join(dir, 'global', 'weights.bin.tmp-123'), 'half-written');
    writeFileSync(join(dir, 'histofed-ensemble.json.tmp'), 'half-written');
    symlinkSync(outside, join(dir, 'global', 'leak.json'));
    symlinkSync(root, join(dir, 'up'));
    symlinkSync(join(dir, 'global'), join(dir, 'global-r1'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('lists the directories and regular files under the run directory, and nothing a link points to', async () => {
    expect((await listArchiveEntries(dir)).map((e) => `${e.type}:${e.name}`)).toEqual([
      'directory:global',
      'file:global/histofed-model.json',
      'file:global/model.json',
      'file:global/weights.bin',
      'file:histofed-ensemble.json',
      'directory:site-1',
      'file:site-1/histofed-model.json',
      'file:site-1/model.json',
      'file:site-1/weights.bin',
    ]);
  });

  it('packs them under <run id>/, byte for byte, with plain modes', async () => {
    const files = await unpack(packModelDirectory(dir, await listArchiveEntries(dir), RUN));
    expect(files.map((f) => `${f.type}:${f.name}`)).toEqual([
      `directory:${RUN}`,
      `directory:${RUN}/global`,
      `file:${RUN}/global/histofed-model.json`,
      `file:${RUN}/global/model.json`,
      `file:${RUN}/global/weights.bin`,
      `file:${RUN}/histofed-ensemble.json`,
      `directory:${RUN}/site-1`,
      `file:${RUN}/site-1/histofed-model.json`,
      `file:${RUN}/site-1/model.json`,
      `file:${RUN}/site-1/weights.bin`,
    ]);
    const byName = new Map(files.map((f) => [f.name, f]));
    expect(byName.get(`${RUN}/global/weights.bin`)!.bytes.equals(weights)).toBe(true);
    expect(byName.get(`${RUN}/site-1/weights.bin`)!.bytes).toHaveLength(0);
    expect(byName.get(`${RUN}/site-1/histofed-model.json`)!.bytes.toString()).toBe('{"member":"site-1"}\n');
    expect(files.filter((f) => f.type === 'file').every((f) => f.mode === 0o644)).toBe(true);
    expect(files.some((f) => f.bytes.toString().includes('not a model'))).toBe(false);
  });

  it('a file turned into a link after the listing stops the archive with an error, and reads nothing outside', async () => {
    const entries = await listArchiveEntries(dir);
    unlinkSync(join(dir, 'site-1', 'model.json'));
    symlinkSync(outside, join(dir, 'site-1', 'model.json'));
    await expect(unpack(packModelDirectory(dir, entries, RUN))).rejects.toThrow(/site-1\/model\.json: not a file under the model directory/);
  });

  it('a directory turned into a link after the listing: the same', async () => {
    const entries = await listArchiveEntries(dir);
    rmSync(join(dir, 'site-1'), { recursive: true });
    mkdirSync(join(root, 'elsewhere'));
    writeFileSync(join(root, 'elsewhere', 'model.json'), 'not a model');
    symlinkSync(join(root, 'elsewhere'), join(dir, 'site-1'));
    await expect(unpack(packModelDirectory(dir, entries, RUN))).rejects.toThrow(/site-1\/.*: not a file under the model directory|ENOENT/);
  });
});
