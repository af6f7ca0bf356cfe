/**
 * `npm run bench:train -- --model backbone`: the two costs of HistoFed's backbone models against
 * the same MobileNetV2 in PyTorch (torchvision, random weights, same cut, input size, batch and
 * threads), alternating in one run:
 *
 * - forward: tile -> frozen ImageNet MobileNetV2 up to block_10_depthwise_relu -> mean-pooled
 *   features, what a site computes once per tile (HistoFed: the training pool's workers, one tile
 *   batch per worker; PyTorch: eval mode, no_grad, its threads);
 * - fine-tuning step from block_9_expand: the cached block-8 feature map -> blocks 9-10 -> heads,
 *   cross-entropy of both stages, Adam (HistoFed: the pool's synchronous data-parallel step).
 */
import { DEFAULT_RUN_MODEL, type LabeledImages, type ModelSpec } from '@histofed/fl-core';
import {
  buildModelAsync,
  completeModelSpec,
  createTrainingPool,
  getWeights,
  parseBackendChoice,
  selectBackend,
  shareImages,
  type TrainingPool,
} from '@histofed/ml';
import { median, round } from '../lib/bench-output';
import { PyTorchPeer, ensureTorch } from './pytorch-peer';

export interface BackboneBenchOptions {
  readonly size: number;
  readonly batch: number;
  readonly steps: number;
  readonly repeats: number;
  readonly workers: number;
  readonly backend: string;
  readonly say: (s: string) => void;
}

function random(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    out[i] = (s / 4294967296) * scale;
  }
  return out;
}

async function alternate(
  say: (s: string) => void,
  what: string,
  repeats: number,
  histofed: () => Promise<number>,
  peer: PyTorchPeer,
  steps: number,
): Promise<{ histofed: number; pytorch: number }> {
  const h: number[] = [];
  const p: number[] = [];
  for (let r = 1; r <= repeats; r++) {
    h.push(await histofed());
    p.push((await peer.run(steps)).imgPerSec);
    say(`  ${what} repeat ${r}: HistoFed ${h.at(-1)?.toFixed(1)} img/s, PyTorch ${p.at(-1)?.toFixed(1)} img/s`);
  }
  return { histofed: median(h), pytorch: median(p) };
}

export async function backboneBench(o: BackboneBenchOptions): Promise<Record<string, unknown>> {
  const { say, size, batch, steps, repeats } = o;
  ensureTorch(say, true);
  const backend = await selectBackend(parseBackendChoice(o.backend));
  const frozen = await completeModelSpec({ ...DEFAULT_RUN_MODEL, imageSize: size, tiles: { scale: 1, views: 0 } });
  const fineTune: ModelSpec = await completeModelSpec({ ...frozen, backbone: { ...frozen.backbone!, trainFrom: 'block_9_expand' } });
  let pool: TrainingPool | undefined;
  const results: Record<string, unknown> = { backend: backend.name, imageSize: size, batch, steps, repeats, workers: o.workers };
  try {
    pool = await createTrainingPool({ workers: o.workers, backend: parseBackendChoice(o.backend) });
    // Forward: tile features.
    const extractor = await pool.featureExtractor(frozen.backbone!, size);
    const tiles = random(steps * batch * size * size * 3, 1);
    const per = batch * size * size * 3;
    const forward = async () => {
      const started = process.hrtime.bigint();
      // One batch per call, the pool's workers taking them in turn (as a site's tile loader does).
      await Promise.all(Array.from({ length: steps }, (_, i) => extractor.extract(tiles.subarray(i * per, (i + 1) * per), batch, size)));
      return (steps * batch) / (Number(process.hrtime.bigint() - started) / 1e9);
    };
    // Warm every worker (the first call on each loads the backbone and compiles kernels).
    await Promise.all(Array.from({ length: o.workers }, () => extractor.extract(tiles.subarray(0, per), batch, size)));
    const fwdPeer = new PyTorchPeer({ kind: 'mobilenet-v2', imageSize: size, batch, learningRate: 1e-3, mode: 'forward' }, 'mobilenet_torch.py');
    await fwdPeer.ready();
    await fwdPeer.run(1);
    say(`forward to ${frozen.backbone!.cut} (${extractor.rowShape.join('x')} features per ${size} px tile), batch ${batch}, ${o.workers} workers vs PyTorch ${fwdPeer.info?.threads} threads`);
    const fwd = await alternate(say, 'forward', repeats, forward, fwdPeer, steps);
    fwdPeer.close();

    // Fine-tuning step of blocks 9-10 + heads on cached block-8 maps.
    const model = await buildModelAsync(fineTune, 1);
    const trainable = model.trainableWeights.reduce((n, w) => n + w.read().size, 0);
    const initial = getWeights(model);
    const shape = model.inputs[0].shape.slice(1) as number[];
    model.dispose();
    const rows = steps * batch;
    const data: LabeledImages = shareImages({
      images: random(rows * shape.reduce((a, b) => a * b, 1), 2, 3),
      count: rows,
      imageSize: size,
      sampleShape: shape,
      labels: Int32Array.from({ length: rows }, (_, i) => i % 2),
      subtypes: Int32Array.from({ length: rows }, (_, i) => (i % 2) * 4 + (i % 4)),
    });
    const opts = { epochs: 1, batchSize: batch, learningRate: 1e-3, proximalMu: 0, seed: 1 };
    const p = pool;
    const step = async () => {
      const started = process.hrtime.bigint();
      await p.train(fineTune, initial, data, opts);
      return rows / (Number(process.hrtime.bigint() - started) / 1e9);
    };
    // Warm-up: one unmeasured pass (the pool's first steps compile kernels and grow the heap).
    await step();
    const ftPeer = new PyTorchPeer({ kind: 'mobilenet-v2', imageSize: size, batch, learningRate: 1e-3, mode: 'finetune' }, 'mobilenet_torch.py');
    await ftPeer.ready();
    await ftPeer.run(1);
    say(`fine-tuning step from block_9_expand (input ${shape.join('x')}, ${trainable} trainable parameters; PyTorch ${ftPeer.info?.parameters})`);
    if (trainable !== ftPeer.info?.parameters) throw new Error(`the PyTorch peer trains ${ftPeer.info?.parameters} parameters, HistoFed ${trainable}: not the same layers`);
    const ft = await alternate(say, 'fine-tune', repeats, step, ftPeer, steps);
    ftPeer.close();
    say(`forward: HistoFed ${fwd.histofed.toFixed(1)} img/s, PyTorch ${fwd.pytorch.toFixed(1)} img/s, ratio ${(fwd.histofed / fwd.pytorch).toFixed(3)}`);
    say(`fine-tuning step: HistoFed ${ft.histofed.toFixed(1)} img/s, PyTorch ${ft.pytorch.toFixed(1)} img/s, ratio ${(ft.histofed / ft.pytorch).toFixed(3)}`);
    Object.assign(results, {
      model: 'backbone',
      cut: frozen.backbone!.cut,
      trainFrom: 'block_9_expand',
      forward: { histofedImgPerSec: round(fwd.histofed), pytorchImgPerSec: round(fwd.pytorch), ratio: round(fwd.histofed / fwd.pytorch, 3) },
      fineTune: { histofedImgPerSec: round(ft.histofed), pytorchImgPerSec: round(ft.pytorch), ratio: round(ft.histofed / ft.pytorch, 3), trainableParameters: trainable },
      pytorchThreads: fwdPeer.info?.threads,
      torch: fwdPeer.info?.torch,
    });
  } finally {
    await pool?.close();
  }
  return results;
}
