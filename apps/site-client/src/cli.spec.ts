import { resolve } from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { buildCli, inspectReport } from './cli';

const SAMPLE = resolve(__dirname, '../../../../shared/data/breakhis-sample');

interface SiteReport {
  site: number;
  images: number;
  patients: number;
  cases: number;
  byLabel: Record<string, number>;
  bySubtype: Record<string, number>;
  byMagnification: Record<string, number>;
  magnification?: number;
  stainShift?: { rotationDegrees: number[]; concentrationScale: number[] };
}
interface InspectJson {
  images: number;
  patients: number;
  bySubtype: Record<string, number>;
  byMagnification: Record<string, number>;
  problems: { path: string; reason: string }[];
  partition?: { kind: string; alpha?: number; test: SiteReport; sites: SiteReport[]; unused: { images: number }; stainShifts?: unknown[] };
}

async function runInspect(...args: string[]): Promise<InspectJson> {
  const chunks: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  });
  try {
    await buildCli().exitOverride().parseAsync(['node', 'histofed-site', 'inspect', '--data', SAMPLE, '--json', ...args]);
  } finally {
    spy.mockRestore();
  }
  const lines = chunks.join('').trim().split('\n');
  expect(lines).toHaveLength(1); // --json prints one line
  return JSON.parse(lines[0]) as InspectJson;
}

describe('histofed-site inspect on the real sample', () => {
  it('reports 213 images, 37 patients, 8 subtypes, 4 magnifications and no problems', async () => {
    const r = await runInspect();
    expect(r.images).toBe(213);
    expect(r.patients).toBe(37);
    expect(Object.keys(r.bySubtype).sort()).toEqual(['A', 'DC', 'F', 'LC', 'MC', 'PC', 'PT', 'TA']);
    expect(Object.keys(r.byMagnification).sort()).toEqual(['100X', '200X', '400X', '40X']);
    expect(r.problems).toEqual([]);
    expect(r.partition).toBeUndefined();
  });

  it.each(['iid', 'label-skew', 'magnification', 'stain'])('--sites 3 --partition %s prints the partition', async (kind) => {
    const r = await runInspect('--sites', '3', '--partition', kind, '--seed', '2');
    const p = r.partition;
    if (!p) throw new Error('no partition');
    expect(p.kind).toBe(kind);
    expect(p.sites).toHaveLength(3);
    const used = p.test.images + p.sites.reduce((a, s) => a + s.images, 0) + p.unused.images;
    expect(used).toBe(213);
    for (const s of p.sites) {
      expect(s.images).toBeGreaterThan(0);
      for (const key of ['patients', 'cases', 'byLabel', 'bySubtype', 'byMagnification']) expect(s).toHaveProperty(key);
    }
    if (kind === 'magnification') expect(p.sites.map((s) => s.magnification)).toEqual([40, 100, 200]);
    if (kind === 'stain') {
      expect(p.stainShifts).toHaveLength(3);
      expect(p.sites[0].stainShift?.concentrationScale).toHaveLength(2);
    }
    if (kind === 'label-skew') expect(p.alpha).toBe(0.5);
  });

  it('--alpha with label-skew; same seed, same report', async () => {
    const a = await runInspect('--sites', '3', '--partition', 'label-skew', '--alpha', '0.2');
    const b = await runInspect('--sites', '3', '--partition', 'label-skew', '--alpha', '0.2');
    expect(a).toEqual(b);
    expect(a.partition?.alpha).toBe(0.2);
  });

  it('refuses --partition without --sites, --alpha without label-skew, and unknown kinds', async () => {
    const base = { data: SAMPLE, alpha: '0.5', seed: '1', testFraction: '0.25' };
    await expect(inspectReport({ ...base, partition: 'stain' })).rejects.toThrow(ValidationError);
    await expect(inspectReport({ ...base, partition: 'iid', sites: '2' }, true)).rejects.toThrow(/label-skew only/);
    await expect(inspectReport({ ...base, partition: 'iid', sites: 'two' })).rejects.toThrow(/--sites must be a number/);
    const cli = buildCli();
    for (const c of cli.commands) c.exitOverride().configureOutput({ writeErr: () => undefined });
    await expect(cli.parseAsync(['node', 'histofed-site', 'inspect', '--data', SAMPLE, '--sites', '2', '--partition', 'bogus'])).rejects.toThrow(
      /bogus.*iid, label-skew, magnification, stain/,
    );
  });
});
