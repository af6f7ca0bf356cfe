import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collectImageFiles } from './image-files';

describe('collectImageFiles', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hf-files-'));
    mkdirSync(join(dir, 'slides', 'deeper'), { recursive: true });
    for (const f of ['slides/b.png', 'slides/a.JPG', 'slides/deeper/c.tiff', 'slides/notes.txt', 'x7f3a9', 'one.png']) writeFileSync(join(dir, f), 'x');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes folders recursively (image extensions, sorted), files by any name, and globs; each file once', async () => {
    const r = await collectImageFiles(['slides', 'x7f3a9', 'slides/*.png', 'one.png'], { cwd: dir });
    expect(r.files.map((f) => f.slice(dir.length + 1))).toEqual(['slides/a.JPG', 'slides/b.png', 'slides/deeper/c.tiff', 'x7f3a9', 'one.png']);
    expect(r.failures).toEqual([]);
  });

  it('reports what it cannot use instead of throwing', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty, { recursive: true });
    const r = await collectImageFiles(['missing.png', 'empty', 'nothing/*.png'], { cwd: dir });
    expect(r.files).toEqual([]);
    expect(r.failures).toEqual([
      { file: 'missing.png', reason: 'no such file or folder' },
      { file: 'empty', reason: expect.stringMatching(/^folder holds no image/) },
      { file: 'nothing/*.png', reason: 'the pattern matches no image file' },
    ]);
  });

  it('stops at maxFiles and says so', async () => {
    const r = await collectImageFiles(['slides', 'one.png'], { cwd: dir, maxFiles: 2 });
    expect(r.files).toHaveLength(2);
    expect(r.failures).toEqual([
      { file: 'slides', reason: 'partly read: more than 2 files were given' },
      { file: 'one.png', reason: 'not read: more than 2 files were given' },
    ]);
  });
});
