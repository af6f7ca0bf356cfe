import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { namedTensor } from '@histofed/fl-core';
import { LocalTensorStore } from './local-tensor-store';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const weights = (conv: number, bn: number) => [
  namedTensor('conv1/kernel', [2], [conv, conv]),
  namedTensor('bn1/gamma', [2], [bn, bn + 1]),
  namedTensor('bn1/moving_mean', [2], [bn * 2, bn * 3]),
];

describe('LocalTensorStore', () => {
  it("starts the first task from the global model, later ones (also after a restart) from the site's own batch-norm tensors", () => {
    const dir = mkdtempSync(join(tmpdir(), 'hf-local-'));
    const first = new LocalTensorStore(dir).startingPoint(RUN, weights(1, 1), 'batch-norm');
    expect(first.own).toBe(false);
    new LocalTensorStore(dir).save(RUN, weights(5, 7), 'batch-norm');
    expect(statSync(join(dir, 'local-tensors', `${RUN}.hfw`)).mode & 0o777).toBe(0o600);

    const restarted = new LocalTensorStore(dir); // a new process: only the file remains
    const next = restarted.startingPoint(RUN, weights(2, 1), 'batch-norm');
    expect(next.own).toBe(true);
    expect(next.weights.map((t) => [t.name, Array.from(t.values)])).toEqual([
      ['conv1/kernel', [2, 2]], // the global model's shared tensor
      ['bn1/gamma', [7, 8]], // the site's own
      ['bn1/moving_mean', [14, 21]],
    ]);
    expect(restarted.load(RUN)!.map((t) => t.name)).toEqual(['bn1/gamma', 'bn1/moving_mean']);
    // Another run, or a run without local tensors, starts from the global model.
    expect(restarted.startingPoint('00000000-0000-4000-8000-000000000001', weights(2, 1), 'batch-norm').own).toBe(false);
    expect(restarted.startingPoint(RUN, weights(2, 1), 'none').own).toBe(false);
  });

  it('names the file when what is stored is damaged, and refuses a run id that is not a UUID', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hf-local-'));
    const store = new LocalTensorStore(dir);
    store.save(RUN, weights(1, 1), 'batch-norm');
    writeFileSync(join(dir, 'local-tensors', `${RUN}.hfw`), 'not weights');
    expect(() => store.startingPoint(RUN, weights(1, 1), 'batch-norm')).toThrow(new RegExp(`local tensors of run ${RUN} \\(.*${RUN}\\.hfw\\)`));
    expect(() => store.load('../../etc/passwd')).toThrow(/is not a UUID/);
  });
});
