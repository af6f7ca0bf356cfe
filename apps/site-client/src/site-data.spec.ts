import { join, resolve } from 'node:path';
import { DEFAULT_MACENKO_TARGET } from '@histofed/data';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { SiteData } from './site-data';
import { sha256File, writeLabelStore } from './label-store';

const cnn = (imageSize: number) => ({ spec: { kind: 'small-cnn', imageSize, numClasses: 2 } });
import { loadSiteConfig } from './site-config';

const SAMPLE = resolve(__dirname, '../../../../shared/data/breakhis-sample');

/** These tests decode the site's real images (some several times): more than Jest's default 5 s on a busy machine. */
const REAL_IMAGES_MS = 120_000;

describe('site data on the real BreakHis sample', () => {
  it('takes its simulated partition and splits it patient-wise into train and validation', async () => {
    const parts = await Promise.all(
      [1, 2, 3].map((i) => SiteData.open(loadSiteConfig({}, { coordinator: 'http://x', siteId: `s${i}`, data: SAMPLE, simulate: `${i}/3` }))),
    );
    const patients = parts.map((p) => [...p.split.train, ...p.split.validation].map((i) => i.patientId));
    // Sites are disjoint by patient.
    for (let a = 0; a < 3; a++) for (let b = a + 1; b < 3; b++) expect(patients[a].filter((p) => patients[b].includes(p))).toEqual([]);
    for (const p of parts) {
      const train = new Set(p.split.train.map((i) => i.caseId));
      expect(p.split.validation.some((i) => train.has(i.caseId))).toBe(false);
      expect(p.split.train.length).toBeGreaterThan(0);
      expect(p.split.validation.length).toBeGreaterThan(0);
      expect(p.split.problems).toBe(0);
    }
    const images = await parts[0].validation(cnn(24));
    expect(images.count).toBe(parts[0].split.validation.length);
    expect(images.images.length).toBe(images.count * 24 * 24 * 3);
  });

  it('applies its simulated stain shift at load time (partition stain)', async () => {
    const cfg = (partition?: string) =>
      loadSiteConfig({}, { coordinator: 'http://x', siteId: 's', data: SAMPLE, simulate: '1/2', cache: false, ...(partition ? { partition } : {}) });
    const plain = await SiteData.open(cfg());
    const shifted = await SiteData.open(cfg('stain'));
    expect(shifted.split.validation.map((i) => i.path)).toEqual(plain.split.validation.map((i) => i.path));
    const a = await plain.validation(cnn(16));
    const b = await shifted.validation(cnn(16));
    let diff = 0;
    for (let i = 0; i < a.images.length; i++) diff += Math.abs(a.images[i] - b.images[i]);
    expect(diff / a.images.length).toBeGreaterThan(0.005);
    expect(shifted.simulation).toEqual(expect.objectContaining({ partition: 'stain' }));
  }, REAL_IMAGES_MS);

  it('applies the run\'s stain normalization after the site\'s stain shift, and validates the target', async () => {
    const config = loadSiteConfig({}, { coordinator: 'http://x', siteId: 's', data: SAMPLE, simulate: '2/2', partition: 'stain', cache: false });
    const site = await SiteData.open(config);
    const raw = await site.validation(cnn(16));
    const normalized = await site.validation({ ...cnn(16), stain: { ...DEFAULT_MACENKO_TARGET } });
    expect(normalized.count).toBe(raw.count);
    let diff = 0;
    for (let i = 0; i < raw.images.length; i++) diff += Math.abs(raw.images[i] - normalized.images[i]);
    expect(diff / raw.images.length).toBeGreaterThan(0.005);
    expect(normalized.images.every((v) => v >= 0 && v <= 1)).toBe(true);
    await expect(site.train({ ...cnn(16), stain: { method: 'macenko', stainMatrix: 'oops' } })).rejects.toThrow(/round config stainNormalization/);
  }, REAL_IMAGES_MS);

  it("computes its stain statistics on its own training images, as shifted by its scanner: the shift moves them", async () => {
    const cfg = (partition?: string) =>
      loadSiteConfig({}, { coordinator: 'http://x', siteId: 's', data: SAMPLE, simulate: '1/2', cache: false, ...(partition ? { partition } : {}) });
    const plain = await SiteData.open(cfg());
    const shifted = await SiteData.open(cfg('stain'));
    const a = await plain.stainStatistics('macenko', 64);
    expect(a.images).toBeGreaterThan(0);
    expect(a.images).toBeLessThanOrEqual(plain.split.train.length);
    const m = a.stats as { stainMatrix: number[][]; maxConcentrations: number[] };
    for (const v of m.stainMatrix) expect(Math.hypot(...v)).toBeCloseTo(1, 6);
    expect(m.maxConcentrations.every((c) => c > 0)).toBe(true);
    const r = await plain.stainStatistics('reinhard', 64);
    expect(r.images).toBe(plain.split.train.length);
    expect(r.stats).toMatchObject({ method: 'reinhard', space: 'cie-lab', pixels: plain.split.train.length * 64 * 64 });
    const rs = (await shifted.stainStatistics('reinhard', 64)).stats as { mean: number[] };
    const diff = Math.max(...rs.mean.map((v, i) => Math.abs(v - (r.stats as { mean: number[] }).mean[i])));
    expect(diff).toBeGreaterThan(0.5); // LAB units
  }, REAL_IMAGES_MS);

  it('takes up labels imported while it runs: the next training set holds them, unchanged stores change nothing', async () => {
    const state = mkdtempSync(join(tmpdir(), 'hf-site-labels-'));
    try {
      const site = await SiteData.open(loadSiteConfig({}, { coordinator: 'http://x', siteId: 's', data: SAMPLE, simulate: '1/3', stateDir: state }));
      const before = await site.train(cnn(16));
      expect(await site.readLabels(state)).toMatchObject({ changed: false });
      // Two images of another site's share, labelled by "our pathologist" (the label store holds absolute paths and hashes).
      const other = (await SiteData.open(loadSiteConfig({}, { coordinator: 'http://x', siteId: 't', data: SAMPLE, simulate: '2/3' }))).split.train.slice(0, 2);
      await writeLabelStore(state, await Promise.all(other.map(async (im) => ({
        file: im.path, sha256: await sha256File(im.path), label: im.label, subtype: im.subtype, patient: im.patientId, importedAt: new Date().toISOString(), queue: join(state, 'q.csv'),
      }))));
      const read = await site.readLabels(state);
      expect(read.changed).toBe(true);
      expect(site.split.labelled).toHaveLength(0); // nothing changes until useLabels
      site.useLabels(read.labels);
      expect(site.split.labelled).toHaveLength(2);
      expect(site.trainCount).toBe(site.split.train.length + 2);
      const after = await site.train(cnn(16));
      expect(after.count).toBe(before.count + 2);
      expect(await site.readLabels(state)).toMatchObject({ changed: false });
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  }, REAL_IMAGES_MS);

  it('stops with a message naming a folder that does not exist', async () => {
    const missing = join(SAMPLE, 'no-such-folder');
    await expect(SiteData.open(loadSiteConfig({}, { coordinator: 'http://x', siteId: 's', data: missing }))).rejects.toThrow(missing);
  });

  it('reads its clinical table (--clinical) per declaration, naming every bad cell; without one, none', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'histofed-clinical-'));
    try {
      const csv = join(dir, 'clinical.csv');
      const schema = { columns: [{ name: 'age', type: 'numeric' as const, min: 20, max: 90 }] };
      const cfg = (clinical?: string) => loadSiteConfig({}, { coordinator: 'http://x', siteId: 's', data: SAMPLE, simulate: '1/3', cache: false, ...(clinical ? { clinical } : {}) });
      await expect(SiteData.open(cfg(join(dir, 'missing.csv')))).rejects.toThrow(/--clinical .*missing\.csv: cannot read the clinical table/);
      writeFileSync(csv, 'patient,age\nP1,44\nP2,120\n');
      const site = await SiteData.open(cfg(csv));
      await expect(site.clinicalTable(schema)).rejects.toThrow(/clinical\.csv line 3, column age: "120" is not in \[20, 90\]/);
      // Fixed while the site runs: the next task reads it again.
      writeFileSync(csv, 'patient,age\nP1,44\nP2,\n');
      const table = await site.clinicalTable(schema);
      expect(table?.records.get('P1')?.values).toEqual([44]);
      expect(table?.records.get('P2')?.values).toEqual([null]);
      expect(await (await SiteData.open(cfg())).clinicalTable(schema)).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, REAL_IMAGES_MS);

  it('adds the slides of its --unlabeled folder to what pretraining reads (any file names), and refuses an empty folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'histofed-unlabeled-'));
    try {
      const cfg = () => loadSiteConfig({}, { coordinator: 'http://x', siteId: 's', data: SAMPLE, simulate: '1/3', cache: false, unlabeled: dir });
      await expect(SiteData.open(cfg())).rejects.toThrow(/--unlabeled .*: no readable image there/);
      const plain = await SiteData.open(loadSiteConfig({}, { coordinator: 'http://x', siteId: 's', data: SAMPLE, simulate: '1/3', cache: false }));
      const [a, b] = plain.split.train;
      copyFileSync(a.path, join(dir, 'slide-1.png'));
      copyFileSync(b.path, join(dir, 'other name.png'));
      const site = await SiteData.open(cfg());
      const images = site.pretrainingImages();
      expect(images.length).toBe(plain.pretrainingImages().length + 2);
      expect(images.slice(-2).map((i) => i.relativePath).sort()).toEqual(['other name.png', 'slide-1.png']);
      // Training and validation do not change: unlabelled slides serve pretraining only.
      expect(site.trainCount).toBe(plain.trainCount);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, REAL_IMAGES_MS);
});
