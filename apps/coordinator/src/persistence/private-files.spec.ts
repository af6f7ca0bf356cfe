import { chmodSync, lstatSync, mkdirSync, mkdtempSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensurePrivateDir, makePrivate } from './private-files';

const mode = (p: string) => lstatSync(p).mode & 0o7777;

describe('private data directory', () => {
  it('takes group and other bits off every file and directory, without following links, and says what it changed', () => {
    const root = mkdtempSync(join(tmpdir(), 'hf-private-'));
    const outside = join(mkdtempSync(join(tmpdir(), 'hf-outside-')), 'shared.txt');
    writeFileSync(outside, 'x');
    chmodSync(outside, 0o644);
    mkdirSync(join(root, 'pgdata', 'base'), { recursive: true });
    writeFileSync(join(root, 'pgdata', 'base', '1'), 'a');
    writeFileSync(join(root, 'keys.json'), 'k');
    writeFileSync(join(root, 'ok'), 'o');
    chmodSync(join(root, 'pgdata', 'base', '1'), 0o666);
    chmodSync(join(root, 'keys.json'), 0o640);
    chmodSync(join(root, 'ok'), 0o600);
    chmodSync(join(root, 'pgdata', 'base'), 0o755);
    chmodSync(join(root, 'pgdata'), 0o750);
    chmodSync(root, 0o755);
    symlinkSync(outside, join(root, 'link'));

    const fixes = makePrivate(root);
    expect(fixes.files).toBe(2);
    expect(fixes.directories).toBe(3);
    expect(fixes.examples).toContainEqual({ path: join(root, 'pgdata', 'base', '1'), from: '0666', to: '0600' });
    expect(mode(join(root, 'pgdata', 'base', '1'))).toBe(0o600);
    expect(mode(join(root, 'keys.json'))).toBe(0o600);
    expect(mode(join(root, 'ok'))).toBe(0o600);
    expect(mode(join(root, 'pgdata', 'base'))).toBe(0o700);
    expect(mode(root)).toBe(0o700);
    expect(statSync(outside).mode & 0o777).toBe(0o644); // a link's target is not ours to change
    expect(makePrivate(root)).toEqual({ files: 0, directories: 0, examples: [] });

    // A data directory that is itself a link to a directory is followed.
    const linked = join(mkdtempSync(join(tmpdir(), 'hf-private-')), 'data');
    symlinkSync(root, linked);
    chmodSync(join(root, 'keys.json'), 0o644);
    chmodSync(root, 0o755);
    expect(ensurePrivateDir(linked)).toBe(true);
    expect(ensurePrivateDir(linked)).toBe(false);
    expect(makePrivate(linked).files).toBe(1);
    expect(mode(join(root, 'keys.json'))).toBe(0o600);
  });

  it('creates the data directory 0700 and tightens an existing one', () => {
    const parent = mkdtempSync(join(tmpdir(), 'hf-private-'));
    const previous = process.umask(0o022);
    try {
      expect(ensurePrivateDir(join(parent, 'a', 'b'))).toBe(false);
      expect(mode(join(parent, 'a', 'b'))).toBe(0o700);
      chmodSync(join(parent, 'a', 'b'), 0o755);
      expect(ensurePrivateDir(join(parent, 'a', 'b'))).toBe(true);
      expect(mode(join(parent, 'a', 'b'))).toBe(0o700);
    } finally {
      process.umask(previous);
    }
  });
});
