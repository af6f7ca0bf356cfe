import { createHash } from 'node:crypto';
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * What left this site, for the hospital's IT team: every message sent to the coordinator is
 * recorded in <stateDir>/outbox/messages.jsonl (event, size, the fields sent, binary parts as
 * size + SHA-256). With auditPlaintext, the exact plaintext of each sealed update is also kept as
 * a .bin file next to it, so anyone can check it holds weights, counts and metrics only.
 */
export class Outbox {
  /** The last sequence number used; read from the log on first use, so a restarted site continues it. */
  private seq: number | undefined;
  private readonly dir: string;

  constructor(
    stateDir: string,
    private readonly keepPlaintext: boolean,
  ) {
    this.dir = join(stateDir, 'outbox');
  }

  async record(event: string, payload: Record<string, unknown>, plaintext?: Uint8Array): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.seq ??= await lastSequenceNumber(join(this.dir, 'messages.jsonl'));
    const n = ++this.seq;
    const summary: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(payload)) {
      summary[k] = v instanceof Uint8Array ? { binaryBytes: v.length, sha256: sha256(v) } : v;
    }
    const entry: Record<string, unknown> = { time: new Date().toISOString(), seq: n, event, payload: summary };
    if (plaintext) {
      entry.plaintext = { bytes: plaintext.length, sha256: sha256(plaintext) };
      if (this.keepPlaintext) {
        const file = `${String(n).padStart(6, '0')}-${event.replace(/[^a-z0-9-]/gi, '_')}.plaintext.bin`;
        await writeFile(join(this.dir, file), plaintext, { mode: 0o600 });
        (entry.plaintext as Record<string, unknown>).file = file;
      }
    }
    await appendFile(join(this.dir, 'messages.jsonl'), JSON.stringify(entry) + '\n', { mode: 0o600 });
  }
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** The highest `seq` in an existing log (0 when there is none): numbers and plaintext file names never repeat across restarts. */
async function lastSequenceNumber(log: string): Promise<number> {
  let text: string;
  try {
    text = await readFile(log, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  let last = 0;
  for (const line of text.split('\n')) {
    const m = /"seq":(\d+)/.exec(line);
    if (m) last = Math.max(last, Number(m[1]));
  }
  return last;
}
