/**
 * `histofed-site predict` as a hospital runs it (issue 15): a model trained on the real sample, the
 * sample's images copied under random names (so no label can come from a file name), plus JPEG and
 * TIFF copies and files that must fail (corrupt, truncated, not an image, too large). predict must
 * reproduce exactly what `evaluate` computes on the labelled tree, list the bad files with their
 * reasons, and aggregate per patient from a CSV.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { readBreakHisTree } from '@histofed/data';
import { predictionReportSchema, type PredictionReport } from '@histofed/inference';
import { COORDINATOR_BIN, REPO_ROOT, SITE_BIN } from '@histofed/harness';

const sample = join(REPO_ROOT, '..', 'shared', 'data', 'breakhis-sample');
const run = (args: string[], timeout = 300_000) =>
  spawnSync(process.execPath, args, { cwd: REPO_ROOT, encoding: 'utf8', timeout, env: { ...process.env, DATABASE_URL: '' } });

describe('histofed-site predict', () => {
  let work: string;
  let model: string;
  let cache: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'hf-predict-'));
    model = join(work, 'model');
    cache = join(work, 'cache');
    // Small tiles of quarter-size images keep the test short (as in cli.e2e): 4 tiles of 96 px per image.
    const t = run([SITE_BIN, 'train', '--data', sample, '--out', model, '--image-size', '96', '--tile-scale', '0.25', '--views', '1', '--cache-dir', cache, '--epochs', '2', '--min-epochs', '1', '--json']);
    expect(t.stderr).not.toMatch(/histofed-site:/);
    expect(t.status).toBe(0);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('classifies images under random names exactly as evaluate does on the tree, per image and per patient; bad files are listed, not fatal', async () => {
    const dataset = await readBreakHisTree(sample);
    const images = join(work, 'incoming');
    mkdirSync(images);
    const truth = new Map<string, { label: string; subtype: string; patient: string }>();
    const csv = ['file,patient'];
    for (const im of dataset.images) {
      const name = `${randomBytes(6).toString('hex')}.png`;
      copyFileSync(im.path, join(images, name));
      truth.set(name, { label: im.label, subtype: im.subtype, patient: im.patientId });
      csv.push(`${name},${im.patientId}`);
    }
    writeFileSync(join(work, 'patients.csv'), csv.join('\n') + '\n');
    // Files that must fail, each with its reason.
    const bad = join(work, 'bad');
    mkdirSync(bad);
    const first = readFileSync(dataset.images[0].path);
    writeFileSync(join(bad, 'corrupt.png'), randomBytes(4096));
    writeFileSync(join(bad, 'truncated.png'), first.subarray(0, 2000));
    writeFileSync(join(bad, 'notes.jpg'), 'not an image at all\n');
    writeFileSync(join(bad, 'empty.tif'), '');
    await sharp({ create: { width: 9000, height: 8000, channels: 3, background: { r: 240, g: 200, b: 220 } } }).png().toFile(join(bad, 'huge.png'));

    const p = run([SITE_BIN, 'predict', '--model', model, '--cache-dir', cache, '--patients', join(work, 'patients.csv'), '--json', images, bad]);
    expect(p.stderr).not.toMatch(/histofed-site:/);
    expect(p.status).toBe(0);
    expect(p.stderr).toMatch(/images 218\/218 \(5 failed\)/);
    const report: PredictionReport = predictionReportSchema.parse(JSON.parse(p.stdout));
    expect(report.images).toHaveLength(213);
    const reasons = Object.fromEntries(report.failures.map((f) => [f.file.split('/').pop(), f.reason]));
    expect(reasons).toEqual({
      'corrupt.png': expect.stringMatching(/^not a readable image/),
      'truncated.png': expect.stringMatching(/./),
      'notes.jpg': expect.stringMatching(/^not a readable image/),
      'empty.tif': 'empty file',
      'huge.png': 'image of 9000x8000 pixels is larger than the limit of 67108864 pixels',
    });

    // evaluate on the labelled tree: the same confusion matrices from predict's classes.
    const e = run([COORDINATOR_BIN, 'evaluate', '--model', model, '--data', sample, '--cache-dir', cache, '--json']);
    expect(e.status).toBe(0);
    const evaluation = JSON.parse(e.stdout);
    const classes = report.model.classes;
    const subtypes = report.model.subtypeClasses as string[];
    const stage1 = classes.map(() => classes.map(() => 0));
    const stage2 = subtypes.map(() => subtypes.map(() => 0));
    for (const im of report.images) {
      const t = truth.get(im.file.split('/').pop() as string)!;
      expect(im.patient).toBe(t.patient);
      stage1[classes.indexOf(t.label)][classes.indexOf(im.stage1.class)]++;
      stage2[subtypes.indexOf(t.subtype)][subtypes.indexOf(im.subtype!.class)]++;
      expect(im.stage1.probability).toBeCloseTo(Math.max(...Object.values(im.stage1.probabilities)), 6);
      expect(im.uncertainty.tiles).toBe(4);
    }
    expect(stage1).toEqual(evaluation.stage1.confusion);
    expect(stage2).toEqual(evaluation.stage2.confusion);

    // Per patient: 37, each with its images' mean probabilities.
    expect(report.patients).toHaveLength(37);
    const one = report.patients[0];
    const mine = report.images.filter((im) => im.patient === one.patient);
    expect(one.images).toBe(mine.length);
    expect(one.stage1.probabilities[classes[1]]).toBeCloseTo(mine.reduce((s, im) => s + im.stage1.probabilities[classes[1]], 0) / mine.length, 6);
    // No review rule in a model trained by `train`: nothing flagged, and the reason says why.
    expect(report.images.every((im) => !im.review && /no review rule/.test(im.reason))).toBe(true);
  });

  it('reads JPEG and TIFF, prints a table and CSV, and runs seeded MC dropout reproducibly', async () => {
    const dataset = await readBreakHisTree(sample);
    const other = join(work, 'formats');
    mkdirSync(other);
    await sharp(dataset.images[1].path).jpeg({ quality: 95 }).toFile(join(other, 'slide.jpeg'));
    await sharp(dataset.images[2].path).tiff().toFile(join(other, 'slide.tif'));
    copyFileSync(dataset.images[3].path, join(other, 'no-extension'));

    const table = run([SITE_BIN, 'predict', '--model', model, '--cache-dir', cache, join(other, '*.{jpeg,tif}'), join(other, 'no-extension')]);
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(/^file\s+class\s+p\s+subtype/m);
    expect(table.stdout).toMatch(/3 images predicted, 0 flagged for review, 0 failures/);

    const csv = run([SITE_BIN, 'predict', '--model', model, '--cache-dir', cache, '--csv', other]);
    expect(csv.status).toBe(0);
    const lines = csv.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^file,patient,class,probability,p_benign,p_malignant,subtype,/);
    expect(lines).toHaveLength(3); // the folder: slide.jpeg and slide.tif (a file without extension is taken only when named)

    const mc = (seed: string) => {
      const r = run([SITE_BIN, 'predict', '--model', model, '--cache-dir', cache, '--json', '--mc-dropout', '8', '--seed', seed, other]);
      expect(r.status).toBe(0);
      return (JSON.parse(r.stdout) as PredictionReport).images.map((im) => im.uncertainty);
    };
    const a = mc('3');
    expect(a.every((u) => u.mcDropoutPasses === 8 && typeof u.mcDropoutMutualInformation === 'number')).toBe(true);
    expect(mc('3')).toEqual(a);
    expect(mc('4').map((u) => u.mcDropoutVariance)).not.toEqual(a.map((u) => u.mcDropoutVariance));

    const flags = run([SITE_BIN, 'predict', '--model', model, '--json', '--csv', other]);
    expect(flags.status).not.toBe(0);
    expect(flags.stderr).toMatch(/--json and --csv: choose one output format/);
    // Issue 19: a clinical table needs the images' patients, and a model that reads no record refuses one.
    const noPatients = run([SITE_BIN, 'predict', '--model', model, '--clinical', join(work, 'clinical.csv'), other]);
    expect(noPatients.status).not.toBe(0);
    expect(noPatients.stderr).toMatch(/--clinical .*clinical\.csv: needs --patients CSV/);
    writeFileSync(join(work, 'clinical.csv'), 'patient,age\nP1,50\n');
    const noRecord = run([SITE_BIN, 'predict', '--model', model, '--clinical', join(work, 'clinical.csv'), '--patients', join(work, 'patients.csv'), other]);
    expect(noRecord.status).not.toBe(0);
    expect(noRecord.stderr).toMatch(/--clinical .*clinical\.csv: the model reads no clinical record/);
  });
});
