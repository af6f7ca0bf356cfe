/**
 * `npm run bench:predict`: what `histofed-site predict` costs at a hospital (issue 15): images/s of
 * the default model (heads on frozen ImageNet MobileNetV2 features of native-resolution 224 px
 * tiles, 12 per 700x460 image) on the real sample's images — cold (no feature cache: every tile
 * through the backbone, as for a new image), warm (features cached: the heads only), and with MC
 * dropout passes — through the real command (a child process, as a user runs it).
 *
 *   npm run bench:predict [-- --model DIR] [--data DIR] [--passes 20] [--json]
 *
 * Without --model, a default model is trained first (`histofed-site train`, 3 epochs, no refit:
 * the figures measure speed, not accuracy) with the shared feature cache.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { REPO_ROOT, SITE_BIN } from '@histofed/harness';
import type { PredictionReport } from '@histofed/inference';
import { reporter, round } from '../lib/bench-output';
import { int } from '../lib/cli-options';

const DEFAULT_SAMPLE = path.resolve(REPO_ROOT, '../shared/data/breakhis-sample');

interface Options {
  model?: string;
  data: string;
  passes: string;
  json?: boolean;
}

function site(args: string[], say: (s: string) => void): { stdout: string; seconds: number } {
  const started = Date.now();
  const r = spawnSync(process.execPath, [SITE_BIN, ...args], { cwd: REPO_ROOT, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  const seconds = (Date.now() - started) / 1000;
  if (r.status !== 0) throw new Error(`histofed-site ${args[0]} failed (${r.status}):\n${r.stderr.slice(-2000)}`);
  say(`  histofed-site ${args[0]}: ${seconds.toFixed(1)} s`);
  return { stdout: r.stdout, seconds };
}

async function main(o: Options): Promise<void> {
  const out = reporter(!!o.json);
  const passes = int('passes', o.passes, 2);
  const work = mkdtempSync(path.join(tmpdir(), 'hf-bench-predict-'));
  try {
    let model = o.model;
    if (!model) {
      model = path.join(work, 'model');
      out.say('training a default model (3 epochs, no refit; the shared feature cache makes this quick when warm)');
      site(['train', '--data', o.data, '--out', model, '--epochs', '3', '--min-epochs', '2', '--no-refit', '--json'], out.say);
    }
    const cache = path.join(work, 'cache');
    const predict = (extra: string[]) => {
      const r = site(['predict', '--model', model as string, '--json', ...extra, o.data], out.say);
      const report = JSON.parse(r.stdout) as PredictionReport;
      return { report, processSeconds: r.seconds };
    };
    out.say('predicting every image: cold (no feature cache) ...');
    const cold = predict(['--cache-dir', cache]);
    out.say('again: warm (the features just cached) ...');
    const warm = predict(['--cache-dir', cache]);
    out.say(`again, warm, with ${passes} MC dropout passes ...`);
    const mc = predict(['--cache-dir', cache, '--mc-dropout', String(passes)]);
    const images = cold.report.summary.images;
    const ips = (r: typeof cold) => r.report.summary.imagesPerSecond ?? 0;
    const mcMs = (1000 * (mc.report.summary.seconds - warm.report.summary.seconds)) / Math.max(1, images);
    const result = {
      images,
      failures: cold.report.failures.length,
      tilesPerImage: cold.report.images[0]?.uncertainty.tiles ?? null,
      coldImagesPerSecond: round(ips(cold), 2),
      warmImagesPerSecond: round(ips(warm), 2),
      mcDropout: { passes, imagesPerSecond: round(ips(mc), 2), extraMsPerImage: round(mcMs, 1) },
      processSeconds: { cold: round(cold.processSeconds, 1), warm: round(warm.processSeconds, 1), mcDropout: round(mc.processSeconds, 1) },
      model: cold.report.model.path,
    };
    out.say(
      `\n${images} images (${result.tilesPerImage} tiles each), ${result.failures} failures\n` +
        `cold (every tile through the backbone): ${result.coldImagesPerSecond} images/s (process ${result.processSeconds.cold} s, model load included)\n` +
        `warm (cached features, heads only):     ${result.warmImagesPerSecond} images/s\n` +
        `MC dropout, ${passes} passes (warm):       ${result.mcDropout.imagesPerSecond} images/s, +${result.mcDropout.extraMsPerImage} ms per image`,
    );
    out.result(result);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

new Command('bench-predict')
  .description('images/s of histofed-site predict with the default model on a BreakHis tree')
  .option('--model <dir>', 'a saved model or ensemble directory (default: train one)')
  .option('--data <dir>', 'BreakHis tree (its images are predicted; labels unused)', DEFAULT_SAMPLE)
  .option('--passes <n>', 'MC dropout passes of the third measurement', '20')
  .option('--json', 'print one JSON line on stdout')
  .action((o: Options) => main(o))
  .parseAsync()
  .catch((e) => {
    process.stderr.write(`bench:predict: ${(e as Error).message}\n`);
    process.exit(1);
  });
