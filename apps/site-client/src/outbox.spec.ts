import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Outbox } from './outbox';

describe('outbox log', () => {
  it('records every message with binary parts as size and hash, and plaintext only when asked', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hf-outbox-'));
    const outbox = new Outbox(dir, true);
    await outbox.record('site:hello', { siteId: 'a', trainSamples: 3 });
    await outbox.record('site:update', { round: 1, sealed: new Uint8Array([1, 2, 3]) }, new Uint8Array([9, 9]));
    const lines = readFileSync(join(dir, 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.seq, l.event])).toEqual([
      [1, 'site:hello'],
      [2, 'site:update'],
    ]);
    expect(lines[0].payload).toEqual({ siteId: 'a', trainSamples: 3 });
    expect(lines[1].payload.sealed).toEqual({ binaryBytes: 3, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(lines[1].plaintext.file).toBe('000002-site_update.plaintext.bin');
    expect(readFileSync(join(dir, 'outbox', lines[1].plaintext.file))).toEqual(Buffer.from([9, 9]));
    expect(statSync(join(dir, 'outbox', 'messages.jsonl')).mode & 0o077).toBe(0);

    const quiet = mkdtempSync(join(tmpdir(), 'hf-outbox-'));
    await new Outbox(quiet, false).record('site:update', { round: 1 }, new Uint8Array([1]));
    expect(readdirSync(join(quiet, 'outbox'))).toEqual(['messages.jsonl']);
  });

  it('continues its numbering after a restart: no plaintext file of an earlier process is overwritten', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hf-outbox-'));
    await new Outbox(dir, true).record('site:update', { round: 1 }, new Uint8Array([1]));
    await new Outbox(dir, true).record('site:update', { round: 2 }, new Uint8Array([2]));
    const lines = readFileSync(join(dir, 'outbox', 'messages.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.seq, l.plaintext.file])).toEqual([
      [1, '000001-site_update.plaintext.bin'],
      [2, '000002-site_update.plaintext.bin'],
    ]);
    expect(readFileSync(join(dir, 'outbox', '000001-site_update.plaintext.bin'))).toEqual(Buffer.from([1]));
  });
});
