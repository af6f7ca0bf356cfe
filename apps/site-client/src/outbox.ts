import { createHash } from 'node:crypto';
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * What left this site, for the hospital's IT team: every message sent to the coordinator is
 * recorded in <stateDir>/outbox/messages.jsonl (event, size, the fields sent, binary parts as
 * size + SHA-256). With auditPlaintext, the exact plaintext of each sealed update is also kept as
 * a .bin file next to it, so anyone can check it holds weights, counts and metrics only.
 */
export class Outbox {
  private seq = 0;
  private readonly dir: string;

  constructor(
    stateDir: string,
    private readonly keepPlaintext: boolean,
  ) {
    this.dir = join(stateDir, 'outbox');
  }

  async record(event: string, payload: Record<string, unknown>, plaintext?: Uint8Array): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
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
