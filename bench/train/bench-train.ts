/**
 * npm run bench:train [-- --json]: trains HistoFed's default classifier (se-cnn; --model small-cnn
 * for the plain one) for a fixed
 * number of steps on random RGB inputs and the same architecture in PyTorch with the same
 * optimizer, alternating in one run; prints images/s of each and the ratio HistoFed / PyTorch.
 * The tfjs `cpu` backend is measured for a few steps too, to show what the training kernels gain.
 * With `--workers N` (N > 1) HistoFed trains data-parallel in a pool of N worker threads
 * (createTrainingPool) instead of trainLocal on the main thread.
 */
import { Command } from 'commander';
import { availableParallelism, cpus } from 'node:os';
import { LabeledImages } from '@histofed/fl-core';
import {
  buildModel,
  createTrainingPool,
  describeModel,
  getWeights,
  parseBackendChoice,
  selectBackend,
  shareImages,
  trainLocal,
} from '@histofed/ml';
import type { TrainingPool } from '@histofed/ml';
import { median, reporter, round } from '../lib/bench-output';
import { randomImages } from '../lib/random-images';
import { backboneBench } from './bench-backbone';
import { PyTorchPeer, ensureTorch } from './pytorch-peer';

interface Options {
  imageSize: string;
  batch: string;
  steps: string;
  repeats: string;
  cpuSteps: string;
  backend: string;
  workers: string;
  model: string;
  json?: boolean;
}


/**
 * Images per second of trainLocal (or of `pool.train` from the model's initial weights) over
 * `steps` batches (one epoch of steps * batch images).
 */
async function tfjsRun(backendChoice: string, kind: string, size: number, batch: number, steps: number, data: LabeledImages, pool?: TrainingPool) {
  await selectBackend(parseBackendChoice(backendChoice));
  const spec = { kind, imageSize: size, numClasses: 2 };
  const model = buildModel(spec, 1);
  const initial = getWeights(model);
  const train = (d: LabeledImages, seed: number) => {
    const opts = { epochs: 1, batchSize: batch, learningRate: 0.001, proximalMu: 0, seed };
    return pool ? pool.train(spec, initial, d, opts) : trainLocal(model, d, opts);
  };
  return { model, train, measure: async () => {
    const started = process.hrtime.bigint();
    const r = await train(data, 1);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return { imgPerSec: (steps * batch) / seconds, seconds, loss: r.loss };
  } };
}

async function main(o: Options): Promise<void> {
  const size = Number(o.imageSize);
  const batch = Number(o.batch);
  const steps = Number(o.steps);
  const repeats = Number(o.repeats);
  const workers = Number(o.workers);
  if (!Number.isInteger(workers) || workers < 1) throw new Error(`--workers: expected an integer >= 1, got ${o.workers}`);
  const { say, result } = reporter(Boolean(o.json));
  if (o.model === 'backbone') {
    result(await backboneBench({ size, batch, steps, repeats, workers, backend: o.backend, say }));
    return;
  }
  ensureTorch(say);

  // In a shared buffer once, as a site would for all its rounds (the pool then never copies them).
  const data = shareImages(randomImages(steps * batch, size, 1));
  const warm = shareImages(randomImages(2 * batch, size, 2));
  const backend = await selectBackend(parseBackendChoice(o.backend));
  say(`machine: ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}`);
  say(`HistoFed ${o.model} ${size}x${size}, batch ${batch}, ${steps} steps x ${repeats} repeats, Adam; backend ${backend.name}`);

  const peer = new PyTorchPeer({ kind: o.model, imageSize: size, batch, learningRate: 0.001 });
  await peer.ready();
  say(`PyTorch ${peer.info!.torch}, ${peer.info!.threads} threads, ${peer.info!.parameters} parameters`);

  let pool: TrainingPool | undefined;
  let poolStartSeconds: number | null = null;
  if (workers > 1) {
    const started = process.hrtime.bigint();
    pool = await createTrainingPool({ workers, backend: parseBackendChoice(o.backend) });
    poolStartSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    say(`training pool: ${workers} worker threads on ${pool.backend?.name}, started in ${poolStartSeconds.toFixed(1)} s`);
  }
  const hf = await tfjsRun(o.backend, o.model, size, batch, steps, data, pool);
  const parameters = describeModel(hf.model).parameters;
  say(`HistoFed: ${parameters} parameters, ${workers === 1 ? 'trainLocal (main thread)' : `${workers} workers`}`);
  if (parameters !== peer.info!.parameters) {
    throw new Error(`the PyTorch peer has ${peer.info!.parameters} parameters, HistoFed's ${o.model} ${parameters}: not the same architecture`);
  }
  // Warm-up both (first steps compile kernels / allocate).
  await hf.train(warm, 2);
  await peer.run(2);

  const hfRates: number[] = [];
  const ptRates: number[] = [];
  for (let r = 1; r <= repeats; r++) {
    const h = await hf.measure();
    const p = await peer.run(steps);
    hfRates.push(h.imgPerSec);
    ptRates.push(p.imgPerSec);
    say(`  repeat ${r}: HistoFed ${h.imgPerSec.toFixed(1)} img/s, PyTorch ${p.imgPerSec.toFixed(1)} img/s`);
  }
  peer.close();
  await pool?.close();
  hf.model.dispose();
  const histofed = median(hfRates);
  const pytorch = median(ptRates);

  let cpuImgPerSec: number | null = null;
  const cpuSteps = Number(o.cpuSteps);
  if (cpuSteps > 0) {
    const cpuBatch = Math.min(batch, 8);
    const cpuData = randomImages(cpuSteps * cpuBatch, size, 3);
    const cpu = await tfjsRun('cpu', o.model, size, cpuBatch, cpuSteps, cpuData);
    cpuImgPerSec = (await cpu.measure()).imgPerSec;
    cpu.model.dispose();
    say(`tfjs cpu backend (pure JavaScript, ${cpuSteps} step(s) of ${cpuBatch}): ${cpuImgPerSec.toFixed(2)} img/s`);
  }

  say(`HistoFed ${histofed.toFixed(1)} img/s, PyTorch ${pytorch.toFixed(1)} img/s, ratio ${(histofed / pytorch).toFixed(3)}` +
    (cpuImgPerSec ? `; ${(histofed / cpuImgPerSec).toFixed(0)}x the tfjs cpu backend` : ''));
  result({
    backend: backend.name,
    model: o.model,
    parameters,
    imageSize: size,
    batch,
    steps,
    repeats,
    workers,
    poolStartSeconds: poolStartSeconds === null ? null : round(poolStartSeconds),
    histofedImgPerSec: round(histofed),
    pytorchImgPerSec: round(pytorch),
    ratio: round(histofed / pytorch, 3),
    tfjsCpuImgPerSec: cpuImgPerSec === null ? null : round(cpuImgPerSec, 3),
    pytorchThreads: peer.info!.threads,
  });
}

new Command('npm run bench:train --')
  .description('Training throughput of HistoFed (tfjs) against PyTorch on the same model, alternating')
  .option('--image-size <px>', 'input size', '128')
  .option('--batch <n>', 'batch size', '32')
  .option('--steps <n>', 'steps per measurement', '10')
  .option('--repeats <n>', 'alternating measurements of each (median reported)', '3')
  .option('--cpu-steps <n>', 'steps on the tfjs cpu backend (0 = skip)', '1')
  .option('--backend <name>', 'HistoFed backend', 'auto')
  .option('--workers <n>', 'HistoFed training threads: 1 = trainLocal on the main thread, N > 1 = a pool of N workers (default: one per core, as the site client)', String(availableParallelism()))
  .option('--model <kind>', 'se-cnn or small-cnn (the compact CNNs, trained whole), or backbone (MobileNetV2 tile features forward, and a fine-tuning step of blocks 9-10; use --image-size 224)', 'se-cnn')
  .option('--json', 'print one JSON line on stdout')
  .action((o: Options) => main(o))
  .parseAsync(process.argv)
  .catch((e: unknown) => {
    process.stderr.write(`bench:train: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
