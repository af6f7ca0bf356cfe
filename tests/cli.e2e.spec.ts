/** The command-line surface, run as a newcomer would: real processes, exit codes, messages. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COORDINATOR_BIN, REPO_ROOT, SITE_BIN } from '@histofed/harness';

const run = (args: string[]) =>
  spawnSync(process.execPath, args, { cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, DATABASE_URL: '' } });
const demo = (...args: string[]) => run([join(REPO_ROOT, 'scripts', 'run-ts.js'), join(REPO_ROOT, 'scripts', 'demo.ts'), ...args]);

describe('command-line programs', () => {
  it('histofed-coordinator and histofed-site print their commands with --help', () => {
    const c = run([COORDINATOR_BIN, '--help']);
    expect(c.status).toBe(0);
    expect(c.stdout).toMatch(/Usage: histofed-coordinator/);
    expect(c.stdout).toMatch(/serve/);
    const s = run([SITE_BIN, '--help']);
    expect(s.status).toBe(0);
    expect(s.stdout).toMatch(/Usage: histofed-site/);
    expect(s.stdout).toMatch(/run/);
    expect(s.stdout).toMatch(/inspect/);
  });

  it('histofed-site inspect --json counts the real BreakHis sample', () => {
    const r = run([SITE_BIN, 'inspect', '--data', join(REPO_ROOT, '..', 'shared', 'data', 'breakhis-sample'), '--json']);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toEqual(expect.objectContaining({ images: 213, patients: 37, problems: [] }));
    expect(Object.keys(report.bySubtype)).toHaveLength(8);
    expect(Object.keys(report.byMagnification).sort()).toEqual(['100X', '200X', '400X', '40X']);
  });

  it('histofed-site train then histofed-coordinator evaluate: a two-stage compact CNN on the real sample, reported per patient', () => {
    const sample = join(REPO_ROOT, '..', 'shared', 'data', 'breakhis-sample');
    const out = join(mkdtempSync(join(tmpdir(), 'hf-train-')), 'model');
    const t = spawnSync(
      process.execPath,
      [SITE_BIN, 'train', '--data', sample, '--out', out, '--model', 'se-cnn', '--epochs', '2', '--image-size', '32', '--min-epochs', '1', '--train-workers', '1', '--no-cache', '--json'],
      { cwd: REPO_ROOT, encoding: 'utf8', timeout: 300_000, env: { ...process.env, DATABASE_URL: '' } },
    );
    expect(t.status).toBe(0);
    const summary = JSON.parse(t.stdout);
    expect(summary.images.train + summary.images.validation).toBe(213);
    expect(summary.patients.validation).toBeGreaterThan(0);
    expect(summary.epochsRun).toBe(2);
    expect(summary.history).toHaveLength(2);
    expect(summary.spec).toEqual(expect.objectContaining({ kind: 'se-cnn', imageSize: 32, subtypeParents: [0, 0, 0, 0, 1, 1, 1, 1] }));
    expect(t.stderr).toMatch(/epoch 2\/2 train loss/);

    const e = run([COORDINATOR_BIN, 'evaluate', '--model', out, '--data', sample, '--json']);
    expect(e.status).toBe(0);
    const r = JSON.parse(e.stdout);
    expect(r).toEqual(expect.objectContaining({ images: 213, patients: 37, kind: 'model', subtypeClasses: ['A', 'F', 'PT', 'TA', 'DC', 'LC', 'MC', 'PC'] }));
    for (const key of ['imageAccuracy', 'patientAccuracy', 'patientDiagnosisAccuracy', 'balancedAccuracy', 'auc', 'f1']) {
      expect(r.stage1).toHaveProperty(key);
    }
    expect(r.stage1.imageAccuracy).toBeGreaterThanOrEqual(0);
    expect(r.stage1.imageAccuracy).toBeLessThanOrEqual(1);
    expect(r.stage2.confusion).toHaveLength(8);
    // The confusion matrix counts every image once; its diagonal is the stage-2 image accuracy.
    const total = r.stage2.confusion.flat().reduce((a: number, b: number) => a + b, 0);
    const diagonal = r.stage2.confusion.reduce((a: number, row: number[], i: number) => a + row[i], 0);
    expect(total).toBe(213);
    expect(r.stage2.imageAccuracy).toBeCloseTo(diagonal / 213, 10);
    expect(typeof r.stage2.macroF1).toBe('number');
    expect(typeof r.ece).toBe('number');
    expect(Object.keys(r.byMagnification)).toEqual(['40', '100', '200', '400']);

    const bad = run([COORDINATOR_BIN, 'evaluate', '--model', sample, '--data', sample]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/histofed-model.json is missing/);
  }, 600_000);

  it('histofed-site train names a bad flag or a missing data folder, and writes nothing', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'hf-train-bad-')), 'model');
    const size = run([SITE_BIN, 'train', '--data', tmpdir(), '--out', out, '--image-size', '8']);
    expect(size.status).toBe(1);
    expect(size.stderr).toMatch(/--image-size: expected an integer in \[16, 512\], got "8"/);
    const missing = join(tmpdir(), 'histofed-no-such-tree');
    const data = run([SITE_BIN, 'train', '--data', missing, '--out', out]);
    expect(data.status).toBe(1);
    expect(data.stderr).toContain(missing);
    expect(existsSync(out)).toBe(false);
  });

  it('histofed-site train with the default model family: heads on the ImageNet backbone\'s tile features, saved as one tile classifier that evaluate splits', () => {
    const sample = join(REPO_ROOT, '..', 'shared', 'data', 'breakhis-sample');
    const work = mkdtempSync(join(tmpdir(), 'hf-train-backbone-'));
    const out = join(work, 'model');
    // Small tiles of quarter-size images keep the test short: 4 tiles of 96 px per image, 1 training view.
    const args = ['--image-size', '96', '--tile-scale', '0.25', '--views', '1', '--cache-dir', join(work, 'cache')];
    const t = spawnSync(process.execPath, [SITE_BIN, 'train', '--data', sample, '--out', out, ...args, '--epochs', '4', '--min-epochs', '3', '--json'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(t.stderr).not.toMatch(/histofed-site:/);
    expect(t.status).toBe(0);
    const summary = JSON.parse(t.stdout);
    expect(summary.spec).toEqual(
      expect.objectContaining({
        kind: 'backbone-head',
        imageSize: 96,
        tiles: { scale: 0.25, views: 1 },
        backbone: expect.objectContaining({ name: 'mobilenet-v2-imagenet', cut: 'block_10_depthwise_relu', features: 384, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) }),
      }),
    );
    // Early stopping may not act before --min-epochs; the saved model is then trained again, as many
    // epochs as the validation patients chose, on every patient.
    expect(summary.epochsRun).toBeGreaterThanOrEqual(3);
    expect(summary.bestEpoch).toBeGreaterThanOrEqual(3);
    expect(summary.refitEpochs).toBe(summary.bestEpoch);
    expect(t.stderr).toMatch(new RegExp(`refit: ${summary.bestEpoch} epochs \\(the best on validation\\) on all 37 patients`));
    expect(summary.images.train + summary.images.validation).toBe(213);
    expect(t.stderr).toMatch(/backbone mobilenet-v2-imagenet .* 384 features per 96 px tile/);
    expect(t.stderr).toContain(`training tiles: ${summary.images.train}/${summary.images.train} images, ${summary.images.train * 5} tiles`);

    const manifest = JSON.parse(readFileSync(join(out, 'histofed-model.json'), 'utf8'));
    expect(manifest.preprocessing).toEqual(expect.objectContaining({ resize: 'tiles', tiles: { size: 96, scale: 0.25, grid: 'cover' } }));
    expect(manifest.spec.backbone.sha256).toBe(summary.spec.backbone.sha256);
    const e = run([COORDINATOR_BIN, 'evaluate', '--model', out, '--data', sample, '--cache-dir', join(work, 'cache'), '--json']);
    expect(e.status).toBe(0);
    const r = JSON.parse(e.stdout);
    expect(r).toEqual(expect.objectContaining({ images: 213, patients: 37, kind: 'model', inputSize: 96 }));
    expect(r.stage2.confusion.flat().reduce((a: number, b: number) => a + b, 0)).toBe(213);
    // evaluate found the grid tiles' features that train computed for its validation images in the cache.
    expect(e.stderr).toContain(`tiles: 213/213 images, 852 tiles (${summary.images.validation} cached)`);
    rmSync(work, { recursive: true, force: true });
  });

  it('the demo stops with a message naming a --data folder that does not exist', () => {
    const missing = join(tmpdir(), 'histofed-no-such-folder');
    const r = demo('--data', missing);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(missing);
  });

  it('the demo refuses a --clinical table it cannot fuse, saying why', () => {
    const kind = demo('--clinical', 'partial');
    expect(kind.status).toBe(1);
    expect(kind.stderr).toMatch(/--clinical must be informative or uninformative, got "partial"/);
    const cnn = demo('--clinical', 'informative', '--model', 'se-cnn');
    expect(cnn.status).toBe(1);
    expect(cnn.stderr).toMatch(/--clinical fuses a record with a frozen backbone's tile features/);
  });

  it('the demo stops with a message naming a --data folder without images', () => {
    const empty = mkdtempSync(join(tmpdir(), 'hf-empty-'));
    const r = demo('--data', empty);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(empty);
    expect(r.stderr).toMatch(/no usable/i);
  });

  it('an explicit backend that is not installed stops both programs at start-up, naming the package', () => {
    const gpu = run([COORDINATOR_BIN, 'serve', '--backend', 'tensorflow-gpu', '--port', '0', '--data-dir', mkdtempSync(join(tmpdir(), 'hf-c-'))]);
    expect(gpu.status).toBe(1);
    expect(gpu.stderr).toMatch(/@tensorflow\/tfjs-node-gpu/);
    expect(gpu.stderr).toMatch(/npm install/);
    const site = run([SITE_BIN, 'run', '--backend', 'tensorflow-gpu', '--coordinator', 'http://127.0.0.1:9', '--site-id', 's', '--data', tmpdir()]);
    expect(site.status).toBe(1);
    expect(site.stderr).toMatch(/@tensorflow\/tfjs-node-gpu/);
  });

  it('a coordinator given a bad setting stops naming it', () => {
    const r = run([COORDINATOR_BIN, 'serve', '--port', 'eighty']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--port \/ HISTOFED_PORT: /);
  });
});
