/**
 * node scripts/run-ts.js bench/train/profile-step.ts [--image-size 128] [--batch 32] [--backend wasm]
 *
 * Where the time of one training step of a HistoFed classifier (--model, default the default model
 * se-cnn; small-cnn and attention-cnn too; Adam, the same step as trainLocal) goes: per-kernel times from tf.profile (each kernel call with its input
 * shapes, the median over --profile-steps profiled steps; then totals per kernel name), and the
 * step time and images/s of unprofiled steps (median of --steps). Inputs are random; only the time
 * matters. On a machine shared with other work, compare runs made at the same time.
 *
 * --fallback turns the fast paths of wasm-training-kernels.ts off (its SIMD kernels and shared
 * Identity; every kernel then takes its fallback: the filter gradient as an XNNPACK convolution,
 * max-pool gradient in JavaScript, wasm's own Sum, Add, Identity, Mean and Multiply, tfjs-core's Mean
 * gradient), which is how the wasm backend trained before them.
 *
 * --ab-input-grad compares Conv2DBackpropInput's nonzero-gather SIMD kernel with its XNNPACK
 * fallback instead: --profile-steps rounds, each timing --steps steps and profiling one step with
 * either, alternating (the order too) in this process; prints both paths' per-call times of each
 * input-gradient call and step times (median and range).
 *
 * --ab-filter-grad does the same for Conv2DBackpropFilter's sparse SIMD kernel (on dy's nonzeros)
 * and its dense SIMD kernel. --max-density d takes the sparse path of either up to a density of dy
 * of d (Infinity: always) instead of the default threshold.
 *
 * --ab-gate does the same for the fast paths of the squeeze-and-excitation gate (SIMD Mean and Sum
 * over the spatial axes, SIMD Multiply by a [b, 1, 1, c] gate, the Mean gradient's ones from the
 * Fill kernel) against wasm's own Mean, Sum and Multiply and tfjs-core's Mean gradient (tf.ones),
 * printing the calls of Mean, Sum, Multiply, RealDiv and Fill.
 */
import { Command } from 'commander';
import { cpus } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import {
  DEFAULT_MODEL_KIND,
  MODEL_KINDS,
  type ModelKind,
  buildModel,
  crossEntropy,
  describeModel,
  parseBackendChoice,
  selectBackend,
  setConv2DBackpropFilterMaxDensity,
  setConv2DBackpropInputMaxDensity,
  setWasmFastPathsEnabled,
  setWasmGateKernelsEnabled,
} from '@histofed/ml';
import { median, reporter, round } from '../lib/bench-output';
import { randomImages } from '../lib/random-images';

interface Options {
  model: string;
  imageSize: string;
  batch: string;
  steps: string;
  warmup: string;
  profileSteps: string;
  backend: string;
  top: string;
  fallback?: boolean;
  abInputGrad?: boolean;
  abFilterGrad?: boolean;
  abGate?: boolean;
  maxDensity?: string;
  json?: boolean;
}

function randomBatch(batch: number, size: number, seed: number): { x: tf.Tensor4D; y: tf.Tensor1D } {
  const { images, labels } = randomImages(batch, size, seed);
  return { x: tf.tensor4d(images, [batch, size, size, 3]), y: tf.tensor1d(labels, 'int32') };
}

/** One Adam step on (x, y), as trainLocal does it; returns when the loss has been read back. */
function step(
  model: tfl.LayersModel,
  optimizer: tf.Optimizer,
  vars: tf.Variable[],
  x: tf.Tensor4D,
  y: tf.Tensor1D,
): number {
  const loss = tf.tidy(
    () =>
      optimizer.minimize(
        () => crossEntropy(model.apply(x, { training: true }) as tf.Tensor2D, y),
        true,
        vars,
      ) as tf.Scalar,
  );
  const value = loss.dataSync()[0];
  loss.dispose();
  return value;
}

interface KernelRow {
  name: string;
  shapes: string;
  calls: number;
  /** Time of these calls in each profiled step. */
  perStep: number[];
  ms: number;
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const lpad = (s: string, n: number) => (s.length >= n ? s : ' '.repeat(n - s.length) + s);

async function main(o: Options): Promise<void> {
  const size = Number(o.imageSize);
  const batch = Number(o.batch);
  const steps = Number(o.steps);
  const warmup = Number(o.warmup);
  const top = Number(o.top);
  const profileSteps = Math.max(1, Number(o.profileSteps));
  const { say, result } = reporter(Boolean(o.json));
  if (o.fallback) setWasmFastPathsEnabled(false);

  if (!(MODEL_KINDS as readonly string[]).includes(o.model)) {
    throw new Error(`--model: unknown model '${o.model}' (known: ${MODEL_KINDS.join(', ')})`);
  }
  const kind = o.model as ModelKind;
  const backend = await selectBackend(parseBackendChoice(o.backend));
  const model = buildModel({ kind, imageSize: size, numClasses: 2 }, 1);
  const vars = model.trainableWeights.map((v) => v.read() as tf.Variable);
  const optimizer = tf.train.adam(0.001);
  const { x, y } = randomBatch(batch, size, 1);
  say(`machine: ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}`);
  say(
    `${kind} ${size}x${size}, batch ${batch}, ${describeModel(model).parameters} parameters, Adam; backend ${backend.name}` +
      (o.fallback ? ' (fast paths of the wasm training kernels off)' : ''),
  );

  for (let i = 0; i < warmup; i++) step(model, optimizer, vars, x, y);

  if (o.abInputGrad || o.abFilterGrad || o.abGate) {
    const run = () => step(model, optimizer, vars, x, y);
    const common = { steps, rounds: profileSteps, say, result };
    const maxDensity = o.maxDensity === undefined ? undefined : Number(o.maxDensity);
    if (o.abGate) {
      await comparePaths(run, {
        ...common,
        kernels: [tf.Mean, tf.Sum, tf.Multiply, tf.RealDiv, tf.Fill],
        modes: ['wasm', 'simd'],
        select: (mode) => setWasmGateKernelsEnabled(mode !== 'wasm'),
      });
    } else if (o.abInputGrad) {
      await comparePaths(run, {
        ...common,
        kernels: [tf.Conv2DBackpropInput],
        modes: ['xnnpack', 'simd'],
        select: (mode) =>
          setConv2DBackpropInputMaxDensity(mode === 'xnnpack' ? 0 : mode === 'simd' ? maxDensity : undefined),
      });
    } else {
      await comparePaths(run, {
        ...common,
        kernels: [tf.Conv2DBackpropFilter],
        modes: ['dense', 'sparse'],
        select: (mode) =>
          setConv2DBackpropFilterMaxDensity(mode === 'dense' ? 0 : mode === 'sparse' ? maxDensity : undefined),
      });
    }
    x.dispose();
    y.dispose();
    optimizer.dispose();
    model.dispose();
    return;
  }

  // Unprofiled steps: the step time.
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = process.hrtime.bigint();
    step(model, optimizer, vars, x, y);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const stepMs = median(times);

  // Profiled steps: time of every kernel call, keyed by kernel and input shapes.
  const rows = new Map<string, KernelRow>();
  let kernelCalls = 0;
  for (let p = 0; p < profileSteps; p++) {
    const profile = await tf.profile(() => {
      step(model, optimizer, vars, x, y);
    });
    kernelCalls = profile.kernels.length;
    const thisStep = new Map<string, number>();
    for (const k of profile.kernels) {
      const ms = Number(await k.kernelTimeMs);
      const shapes = k.inputShapes.map((s) => `[${s}]`).join(' ');
      const key = `${k.name} ${shapes}`;
      thisStep.set(key, (thisStep.get(key) ?? 0) + ms);
      if (p === 0) {
        const r = rows.get(key) ?? { name: k.name, shapes, calls: 0, perStep: [], ms: 0 };
        r.calls++;
        rows.set(key, r);
      }
    }
    for (const [key, ms] of thisStep) rows.get(key)?.perStep.push(ms);
  }
  const byName = new Map<string, { calls: number; ms: number }>();
  let kernelMs = 0;
  for (const r of rows.values()) {
    r.ms = median(r.perStep);
    kernelMs += r.ms;
    const n = byName.get(r.name) ?? { calls: 0, ms: 0 };
    n.calls += r.calls;
    n.ms += r.ms;
    byName.set(r.name, n);
  }
  const sorted = [...rows.values()].sort((a, b) => b.ms - a.ms);
  const names = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms);

  say(
    `\nkernel calls of one step (tf.profile, median of ${profileSteps} steps), slowest first (top ${top} of ${sorted.length}):`,
  );
  const figures = (ms: number, calls: number) =>
    `${lpad(ms.toFixed(1), 9)} ${lpad(((100 * ms) / kernelMs).toFixed(1) + '%', 6)} ${lpad(String(calls), 5)}`;
  say(`${lpad('ms', 9)} ${lpad('share', 6)} ${lpad('calls', 5)}  kernel  input shapes`);
  for (const r of sorted.slice(0, top)) say(`${figures(r.ms, r.calls)}  ${pad(r.name, 22)} ${r.shapes}`);
  say(`\nper kernel name:`);
  for (const [name, n] of names) {
    if (n.ms < (0.05 * kernelMs) / 100) continue;
    say(`${figures(n.ms, n.calls)}  ${name}`);
  }
  say(
    `\nkernels ${kernelMs.toFixed(0)} ms in ${kernelCalls} calls (profiled step); ` +
      `step ${stepMs.toFixed(0)} ms (median of ${steps}: ${times.map((t) => t.toFixed(0)).join(', ')}), ` +
      `${((1000 * batch) / stepMs).toFixed(1)} images/s`,
  );
  result({
    backend: backend.name,
    model: kind,
    fastPaths: !o.fallback,
    imageSize: size,
    batch,
    stepMs: round(stepMs, 1),
    imagesPerSec: round((1000 * batch) / stepMs, 1),
    kernelMs: round(kernelMs, 1),
    kernels: sorted.map((r) => ({ name: r.name, inputShapes: r.shapes, calls: r.calls, ms: round(r.ms, 2) })),
  });

  x.dispose();
  y.dispose();
  optimizer.dispose();
  model.dispose();
}

/**
 * A/B of two paths of `kernels` (modes[0] -> modes[1], chosen by `select`; undefined restores the
 * default), alternating (the order too) over `rounds` rounds in this process.
 */
async function comparePaths(
  run: () => void,
  o: {
    kernels: string[];
    modes: [string, string];
    select: (mode: string | undefined) => void;
    steps: number;
    rounds: number;
    say: (s: string) => void;
    result: (v: unknown) => void;
  },
): Promise<void> {
  const [a, b] = o.modes;
  const stepMs: Record<string, number[]> = { [a]: [], [b]: [] };
  const calls: Record<string, Map<string, number[]>> = { [a]: new Map(), [b]: new Map() };
  // the calls with the same kernel and input shapes in one profiled step, added up
  const thisRound: Record<string, Map<string, number>> = { [a]: new Map(), [b]: new Map() };
  try {
    for (let r = 0; r < o.rounds; r++) {
      for (const mode of r % 2 === 0 ? [a, b] : [b, a]) {
        o.select(mode);
        run(); // a step on this path before timing
        for (let i = 0; i < o.steps; i++) {
          const t0 = process.hrtime.bigint();
          run();
          stepMs[mode].push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
        const profile = await tf.profile(run);
        for (const k of profile.kernels) {
          if (!o.kernels.includes(k.name)) continue;
          const key = `${o.kernels.length > 1 ? k.name + ' ' : ''}${k.inputShapes.map((s) => `[${s}]`).join(' ')}`;
          thisRound[mode].set(key, (thisRound[mode].get(key) ?? 0) + Number(await k.kernelTimeMs));
        }
        for (const [key, ms] of thisRound[mode]) {
          const list = calls[mode].get(key) ?? [];
          list.push(ms);
          calls[mode].set(key, list);
        }
        thisRound[mode].clear();
      }
    }
  } finally {
    o.select(undefined);
  }
  const range = (xs: number[]) =>
    `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)})`;
  const keys = [...new Set([...calls[a].keys(), ...calls[b].keys()])].sort(
    (x, y) => median(calls[a].get(y) ?? [0]) - median(calls[a].get(x) ?? [0]),
  );
  const total = (mode: string) => keys.reduce((t, key) => t + median(calls[mode].get(key) ?? [0]), 0);
  o.say(
    `\n${o.kernels.join(', ')}: ms per step of the calls with these input shapes, median (range) of ` +
      `${o.rounds} rounds each, ${a} -> ${b}:`,
  );
  for (const key of keys) {
    const xs = calls[a].get(key) ?? [NaN];
    const ys = calls[b].get(key) ?? [NaN];
    if (Math.max(median(xs), median(ys)) < 0.2) continue; // small tensors: listed in the total only
    o.say(`  ${key}: ${range(xs)} -> ${range(ys)}`);
  }
  o.say(`  total (sum of medians): ${total(a).toFixed(1)} -> ${total(b).toFixed(1)}`);
  o.say(`step, ms, median (range) of ${stepMs[a].length} steps each: ${range(stepMs[a])} -> ${range(stepMs[b])}`);
  o.result({
    kernels: o.kernels,
    callMs: Object.fromEntries(keys.map((key) => [key, { [a]: calls[a].get(key), [b]: calls[b].get(key) }])),
    stepMs,
  });
}

new Command('node scripts/run-ts.js bench/train/profile-step.ts')
  .description('Per-kernel times of one training step of a model (tf.profile), step time and images/s')
  .option('--model <kind>', `model kind (${MODEL_KINDS.join(', ')})`, DEFAULT_MODEL_KIND)
  .option('--image-size <px>', 'input size', '128')
  .option('--batch <n>', 'batch size', '32')
  .option('--steps <n>', 'timed steps (median reported)', '5')
  .option('--warmup <n>', 'steps before measuring', '2')
  .option('--profile-steps <n>', 'profiled steps (median per kernel call)', '3')
  .option('--fallback', 'turn the fast paths of the wasm training kernels off (how wasm trained before them)')
  .option('--ab-input-grad', "alternate Conv2DBackpropInput's SIMD kernel and its XNNPACK fallback; compare")
  .option('--ab-filter-grad', "alternate Conv2DBackpropFilter's sparse and dense SIMD kernels; compare")
  .option('--max-density <d>', 'with --ab-input-grad/--ab-filter-grad: the sparse path up to this dy density')
  .option('--ab-gate', "alternate the SE gate's SIMD kernels (Mean, Sum, Multiply) and wasm's own; compare")
  .option('--backend <name>', 'backend (auto, tensorflow, wasm, cpu, ...)', 'wasm')
  .option('--top <n>', 'kernel calls listed', '30')
  .option('--json', 'print one JSON line on stdout')
  .action((o: Options) => main(o))
  .parseAsync(process.argv)
  .catch((e: unknown) => {
    process.stderr.write(`profile-step: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
