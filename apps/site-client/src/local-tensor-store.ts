import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalTensorPolicy, WeightSet, decodeWeights, encodeWeights, localTensorsOf, withLocalTensors } from '@histofed/fl-core';

const RUN_ID = /^[0-9a-f-]{36}$/i;

/**
 * The tensors a site keeps for itself in a run with local tensors (FedBN): after each task the
 * site stores them in `<state dir>/local-tensors/<run id>.hfw` (a HistoFed weight blob, written
 * atomically, mode 0600); the next task of that run, also after a restart of the site, trains from
 * the global model with these in place of the global ones. They are sent with the update (the
 * coordinator evaluates each site's model with them) but never aggregated.
 */
export class LocalTensorStore {
  constructor(private readonly stateDir: string) {}

  private file(runId: string): string {
    if (!RUN_ID.test(runId)) throw new Error(`run id ${JSON.stringify(runId)} is not a UUID`);
    return join(this.stateDir, 'local-tensors', `${runId}.hfw`);
  }

  /** This site's local tensors of the run, or null before its first task in it. */
  load(runId: string): WeightSet | null {
    let bytes: Buffer;
    try {
      bytes = readFileSync(this.file(runId));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    return decodeWeights(new Uint8Array(bytes), `local tensors of run ${runId} (${this.file(runId)})`);
  }

  /** Keeps the policy's tensors of `weights` (the model the site just trained). */
  save(runId: string, weights: WeightSet, policy: LocalTensorPolicy): void {
    const local = localTensorsOf(weights, policy);
    if (local.length === 0) return;
    const file = this.file(runId);
    mkdirSync(join(this.stateDir, 'local-tensors'), { recursive: true, mode: 0o700 });
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, encodeWeights(local), { mode: 0o600 });
    renameSync(tmp, file);
  }

  /**
   * The model a task starts from: the global weights with this site's own local tensors, when it
   * has any for the run (else the global ones: its first round).
   */
  startingPoint(runId: string, global: WeightSet, policy: LocalTensorPolicy): { weights: WeightSet; own: boolean } {
    if (policy === 'none') return { weights: global, own: false };
    const own = this.load(runId);
    if (!own) return { weights: global, own: false };
    return { weights: withLocalTensors(global, localTensorsOf(own, policy)), own: true };
  }
}
