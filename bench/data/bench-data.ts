/**
 * npm run bench:data [-- --json]: how fast the data pipeline feeds training.
 *
 * 1. On the real BreakHis sample (../shared/data/breakhis-sample, 213 PNGs of 700x460), at 64 and
 *    128 px: images/second through iterateBatches with no cache, with a cold cache (decode + resize
 *    + store) and with a warm cache (a new ImageCache on the same folder, as a second run sees it),
 *    the last also with the default augmentation. The consumer does nothing, so these are the
 *    rates at which data can be supplied; compare them with `npm run bench:train`.
 * 2. Peak RSS of a child process that streams 10,000 synthetic 128 px images through
 *    iterateBatches twice (cold cache, then warm cache, with augmentation). The synthetic PNGs are
 *    generated once into os.tmpdir() and reused by later runs; the cache of that run is deleted.
 *
 * Figures go to stdout; with --json they go to stderr and stdout gets one JSON line.
 */
import { Command } from 'commander';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ImageCache,
  generateSyntheticBreakHis,
  iterateBatches,
  readBreakHisTree,
  type AugmentOptions,
  type BreakHisImage,
} from '@histofed/data';
import { median, reporter, round } from '../lib/bench-output';

const ROOT = path.resolve(__dirname, '../..');
const DEFAULT_SAMPLE = path.resolve(ROOT, '../shared/data/breakhis-sample');
const ONE_GIB = 1024 ** 3;
const MIB = 1024 ** 2;

interface Options {
  data: string;
  sizes: string;
  batch: string;
  repeats: string;
  streamImages: string;
  streamSize: string;
  stream: boolean;
  json?: boolean;
  streamChild?: string;
}

interface DecodeFigures {
  imageSize: number;
  noCacheImgPerSec: number;
  coldCacheImgPerSec: number;
  warmCacheImgPerSec: number;
  warmCacheAugmentedImgPerSec: number;
}

interface StreamFigures {
  images: number;
  imageSize: number;
  batchSize: number;
  coldCacheImgPerSec: number;
  warmCacheImgPerSec: number;
  /** RSS of the child when it starts streaming (Node, ts-node, sharp loaded). */
  startRssMiB: number;
  /** Highest RSS of the child over its whole life (getrusage maxrss). */
  peakRssMiB: number;
  underOneGiB: boolean;
}

/** Seconds to stream `images` once through iterateBatches; the consumer only touches each batch. */
async function streamOnce(
  images: readonly BreakHisImage[],
  opts: { imageSize: number; batchSize: number; cache?: ImageCache; augment?: AugmentOptions; epoch?: number; onBatch?: () => void },
): Promise<number> {
  const started = process.hrtime.bigint();
  let seen = 0;
  for await (const batch of iterateBatches(images, { ...opts, seed: 1 })) {
    seen += batch.count;
    opts.onBatch?.();
  }
  if (seen !== images.length) throw new Error(`streamed ${seen} of ${images.length} images`);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function decodeFigures(
  images: BreakHisImage[],
  imageSize: number,
  batchSize: number,
  repeats: number,
  say: (s: string) => void,
): Promise<DecodeFigures> {
  const n = images.length;
  const rate = (seconds: number[]) => round(n / median(seconds), 1);
  const none: number[] = [];
  const cold: number[] = [];
  const warm: number[] = [];
  const augmented: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'histofed-bench-cache-'));
    try {
      none.push(await streamOnce(images, { imageSize, batchSize }));
      cold.push(await streamOnce(images, { imageSize, batchSize, cache: new ImageCache({ dir }) }));
      // A new instance, as a second run would open it: path index from disk, no hashing, no decoding.
      const second = new ImageCache({ dir });
      warm.push(await streamOnce(images, { imageSize, batchSize, cache: second }));
      augmented.push(await streamOnce(images, { imageSize, batchSize, cache: new ImageCache({ dir }), augment: {}, epoch: r }));
      const s = second.stats();
      if (s.decodes !== 0 || s.hashed !== 0) throw new Error(`warm cache decoded ${s.decodes} and hashed ${s.hashed} images`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    say(
      `  ${imageSize} px, repeat ${r + 1}: no cache ${(n / none[r]).toFixed(0)}, cold ${(n / cold[r]).toFixed(0)}, ` +
        `warm ${(n / warm[r]).toFixed(0)}, warm+augment ${(n / augmented[r]).toFixed(0)} img/s`,
    );
  }
  return {
    imageSize,
    noCacheImgPerSec: rate(none),
    coldCacheImgPerSec: rate(cold),
    warmCacheImgPerSec: rate(warm),
    warmCacheAugmentedImgPerSec: rate(augmented),
  };
}

/** Generates (once, reused by later runs) `count` synthetic images whose short side is `size`. */
async function syntheticTree(count: number, size: number, say: (s: string) => void): Promise<string> {
  const imagesPerPatient = 50;
  const patientsPerSubtype = Math.ceil(count / (8 * imagesPerPatient));
  const total = patientsPerSubtype * 8 * imagesPerPatient;
  const dir = path.join(os.tmpdir(), `histofed-bench-data-synthetic-${total}-${size}-v1`);
  const marker = path.join(dir, 'COMPLETE');
  if (existsSync(marker)) return dir;
  say(`generating ${total} synthetic ${Math.round(size * 1.5)}x${size} PNGs into ${dir} (once; later runs reuse them) ...`);
  const started = Date.now();
  await rm(dir, { recursive: true, force: true });
  await generateSyntheticBreakHis(dir, { patientsPerSubtype, imagesPerPatient, width: Math.round(size * 1.5), height: size, seed: 1 });
  await writeFile(marker, `${total} images\n`);
  say(`  generated in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return dir;
}

/** Child process: streams the synthetic tree twice and prints its figures as one JSON line. */
async function streamChild(dir: string, count: number, imageSize: number, batchSize: number): Promise<void> {
  const images = (await readBreakHisTree(dir)).images.slice(0, count);
  const cacheDir = await mkdtemp(path.join(os.tmpdir(), 'histofed-bench-stream-cache-'));
  const startRss = process.memoryUsage().rss;
  let peakSampled = startRss;
  const onBatch = () => {
    peakSampled = Math.max(peakSampled, process.memoryUsage().rss);
  };
  try {
    const cold = await streamOnce(images, { imageSize, batchSize, cache: new ImageCache({ dir: cacheDir }), augment: {}, onBatch });
    const warm = await streamOnce(images, { imageSize, batchSize, cache: new ImageCache({ dir: cacheDir }), augment: {}, epoch: 1, onBatch });
    const peak = Math.max(peakSampled, process.resourceUsage().maxRSS * 1024);
    const figures: StreamFigures = {
      images: images.length,
      imageSize,
      batchSize,
      coldCacheImgPerSec: round(images.length / cold, 1),
      warmCacheImgPerSec: round(images.length / warm, 1),
      startRssMiB: round(startRss / MIB, 1),
      peakRssMiB: round(peak / MIB, 1),
      underOneGiB: peak < ONE_GIB,
    };
    process.stdout.write(JSON.stringify(figures) + '\n');
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
}

function runStreamChild(dir: string, count: number, imageSize: number, batchSize: number): Promise<StreamFigures> {
  const args = [
    path.join(ROOT, 'scripts/run-ts.js'),
    path.join(ROOT, 'bench/data/bench-data.ts'),
    '--stream-child',
    dir,
    '--stream-images',
    String(count),
    '--stream-size',
    String(imageSize),
    '--batch',
    String(batchSize),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`streaming child exited with code ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as StreamFigures);
      } catch (err) {
        reject(new Error(`streaming child printed no figures: ${(err as Error).message}`));
      }
    });
  });
}

async function main(o: Options): Promise<void> {
  const batchSize = Number(o.batch);
  const streamImages = Number(o.streamImages);
  const streamSize = Number(o.streamSize);
  if (o.streamChild) return streamChild(o.streamChild, streamImages, streamSize, batchSize);

  const { say, result } = reporter(Boolean(o.json));
  const sizes = o.sizes.split(',').map(Number);
  const repeats = Number(o.repeats);
  say(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}`);

  const sample = await readBreakHisTree(o.data);
  if (sample.images.length === 0) throw new Error(`no BreakHis images found in ${o.data}`);
  say(`real sample: ${sample.images.length} images (${sample.problems.length} problems) in ${sample.root}`);
  say(`iterateBatches, batch ${batchSize}, prefetch 2, 4 decodes at a time; images/second (median of ${repeats}):`);
  const decode: DecodeFigures[] = [];
  for (const size of sizes) decode.push(await decodeFigures(sample.images, size, batchSize, repeats, say));
  for (const d of decode) {
    say(
      `${d.imageSize} px: no cache ${d.noCacheImgPerSec} img/s, cold cache ${d.coldCacheImgPerSec} img/s, ` +
        `warm cache ${d.warmCacheImgPerSec} img/s (${round(d.warmCacheImgPerSec / d.coldCacheImgPerSec, 1)}x cold), ` +
        `warm + augmentation ${d.warmCacheAugmentedImgPerSec} img/s`,
    );
  }

  let stream: StreamFigures | undefined;
  if (o.stream) {
    const dir = await syntheticTree(streamImages, streamSize, say);
    say(`streaming ${streamImages} synthetic images at ${streamSize} px in a child process (cold cache, then warm, with augmentation) ...`);
    stream = await runStreamChild(dir, streamImages, streamSize, batchSize);
    say(
      `stream: ${stream.images} images at ${stream.imageSize} px: cold ${stream.coldCacheImgPerSec} img/s, ` +
        `warm ${stream.warmCacheImgPerSec} img/s; RSS ${stream.startRssMiB} MiB at start, peak ${stream.peakRssMiB} MiB ` +
        `(${stream.underOneGiB ? 'under' : 'OVER'} 1 GiB)`,
    );
  }
  result({
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'cpu', node: process.version },
    sample: { root: sample.root, images: sample.images.length },
    batchSize,
    decode,
    stream: stream ?? null,
  });
}

const program = new Command()
  .name('bench-data')
  .option('--data <dir>', 'real BreakHis sample', DEFAULT_SAMPLE)
  .option('--sizes <list>', 'image sizes for the real sample', '64,128')
  .option('--batch <n>', 'batch size', '32')
  .option('--repeats <n>', 'repeats per size on the real sample', '3')
  .option('--stream-images <n>', 'synthetic images streamed for the memory figure', '10000')
  .option('--stream-size <n>', 'image size of the streaming run', '128')
  .option('--no-stream', 'skip the 10,000-image streaming run')
  .option('--stream-child <dir>', 'internal: run the streaming measurement on this tree')
  .option('--json', 'print one JSON line on stdout (figures go to stderr)')
  .action(async (o: Options) => main(o));

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`bench-data: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
