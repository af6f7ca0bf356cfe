/**
 * Chooses the TensorFlow.js backend at start-up (`--backend auto|tensorflow-gpu|tensorflow|wasm|cpu`).
 *
 * - `tensorflow-gpu`: `@tensorflow/tfjs-node-gpu` (libtensorflow with CUDA)
 * - `tensorflow`:     `@tensorflow/tfjs-node`     (libtensorflow on the CPU)
 * - `wasm`:           `@tensorflow/tfjs-backend-wasm` plus the training kernels it lacks
 *                     (see wasm-training-kernels.ts)
 * - `cpu`:            `@tensorflow/tfjs-backend-cpu` (pure JavaScript, very slow for training)
 *
 * `auto` takes the first that loads, in that order. The native packages are optional
 * dependencies that download libtensorflow at install time; when they are absent (the require
 * fails with MODULE_NOT_FOUND) `auto` moves on, any other failure is reported.
 *
 * One tfjs-core: every HistoFed module imports `@tensorflow/tfjs-core`. tfjs-node brings
 * `@tensorflow/tfjs`, whose tfjs-core npm normally dedupes to the same copy. Even when it does not,
 * tfjs-core keeps its engine, backend registry and kernel registry on `globalThis`
 * (`_tfengine`, `_tfGlobals`), so a backend registered by another copy is visible here and
 * tensors pass between copies (`instanceof Tensor` is duck-typed). The one thing that would break
 * is a different major version of tfjs-core; `selectBackend` then fails with a clear error
 * rather than training on a backend it cannot see.
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's CommonJS build registers no gradient functions; tfjs-layers' build registers them all
// (tf.grads and optimizer.minimize fail with "gradient function not found for Sum" without it).
import '@tensorflow/tfjs-layers';
import { HistoFedError, ValidationError } from '@histofed/fl-core';
import { registerWasmTrainingKernels } from './wasm-training-kernels';

export type BackendChoice = 'auto' | 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';
export type BackendName = Exclude<BackendChoice, 'auto'>;

export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

/** The backend in use, as reported at start-up. */
export interface SelectedBackend {
  /** HistoFed's name for it (what `--backend` accepts). */
  readonly name: BackendName;
  /** The npm package that provides it. */
  readonly package: string;
  /** tfjs's own backend name (`tf.getBackend()`): 'tensorflow' for both native packages. */
  readonly tfBackend: string;
  /** With `auto`: the backends tried first that were not installed, and why. */
  readonly skipped: readonly { readonly name: BackendName; readonly package: string; readonly reason: string }[];
}

/** An explicitly chosen backend cannot be loaded; the message says how to install it. */
export class BackendUnavailableError extends HistoFedError {
  constructor(
    readonly backend: BackendName,
    readonly packageName: string,
    message: string,
  ) {
    super('BACKEND_UNAVAILABLE', message);
  }
}

interface Candidate {
  readonly name: BackendName;
  readonly package: string;
  readonly tfBackend: string;
  readonly install: string;
}

const CANDIDATES: readonly Candidate[] = [
  {
    name: 'tensorflow-gpu',
    package: '@tensorflow/tfjs-node-gpu',
    tfBackend: 'tensorflow',
    install:
      'npm install @tensorflow/tfjs-node-gpu (needs Linux x64 with an NVIDIA GPU, CUDA and cuDNN, and network access to download libtensorflow at install time)',
  },
  {
    name: 'tensorflow',
    package: '@tensorflow/tfjs-node',
    tfBackend: 'tensorflow',
    install: 'npm install @tensorflow/tfjs-node (needs network access to download libtensorflow at install time)',
  },
  {
    name: 'wasm',
    package: '@tensorflow/tfjs-backend-wasm',
    tfBackend: 'wasm',
    install: 'npm install @tensorflow/tfjs-backend-wasm',
  },
  {
    name: 'cpu',
    package: '@tensorflow/tfjs-backend-cpu',
    tfBackend: 'cpu',
    install: 'npm install @tensorflow/tfjs-backend-cpu',
  },
];

/** Parses a `--backend` value; throws a ValidationError naming the allowed values. */
export function parseBackendChoice(s: string): BackendChoice {
  const v = s.trim().toLowerCase();
  if ((BACKEND_CHOICES as readonly string[]).includes(v)) return v as BackendChoice;
  throw new ValidationError(`backend: "${s}" is not one of ${BACKEND_CHOICES.join(', ')}`);
}

export interface SelectBackendOptions {
  /** How packages are loaded; tests inject failures here. Defaults to Node's `require`. */
  readonly requireModule?: (id: string) => unknown;
}

function nodeRequire(id: string): unknown {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(id);
}

function isModuleNotFound(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === 'MODULE_NOT_FOUND';
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message.split('\n')[0] : String(e);
}

class NotInstalled extends Error {}

let current: (SelectedBackend & { readonly requested: BackendChoice }) | null = null;
let queue: Promise<unknown> = Promise.resolve();

/** The backend chosen by the last successful `selectBackend`, or null. */
export function currentBackend(): SelectedBackend | null {
  if (current === null) return null;
  const { requested: _requested, ...rest } = current;
  return rest;
}

async function activate(c: Candidate, requireModule: (id: string) => unknown): Promise<void> {
  let mod: unknown;
  try {
    mod = requireModule(c.package);
  } catch (e) {
    if (isModuleNotFound(e)) throw new NotInstalled(messageOf(e));
    throw new BackendUnavailableError(
      c.name,
      c.package,
      `backend ${c.name}: ${c.package} is installed but failed to load: ${messageOf(e)}. Reinstall it (${c.install}) or choose another backend`,
    );
  }
  if (c.name === 'wasm') registerWasmTrainingKernels();
  if (tf.findBackendFactory(c.tfBackend) == null) {
    // The package registered its backend with a tfjs-core this module cannot see; adopt it if the
    // package exposes its registry (tfjs-node re-exports the whole tfjs API).
    const factory = (mod as { findBackendFactory?: (n: string) => unknown } | null)?.findBackendFactory?.(c.tfBackend);
    if (typeof factory !== 'function') {
      throw new BackendUnavailableError(
        c.name,
        c.package,
        `backend ${c.name}: ${c.package} loaded but registered no '${c.tfBackend}' backend with @tensorflow/tfjs-core ${tf.version_core}; it probably uses another tfjs-core version (align the @tensorflow/* versions)`,
      );
    }
    tf.registerBackend(c.tfBackend, factory as () => tf.KernelBackend);
  }
  let ok: boolean;
  try {
    ok = await tf.setBackend(c.tfBackend);
  } catch (e) {
    throw new BackendUnavailableError(c.name, c.package, `backend ${c.name}: initialisation failed: ${messageOf(e)}`);
  }
  if (!ok) {
    throw new BackendUnavailableError(
      c.name,
      c.package,
      `backend ${c.name}: ${c.package} loaded but its '${c.tfBackend}' backend failed to initialise (see the warning above)`,
    );
  }
  await tf.ready();
  if (c.name === 'cpu') {
    // tfjs-backend-cpu prints "Hi, looks like you are running TensorFlow.js in Node.js" on first use.
    const b = tf.backend() as unknown as { firstUse?: boolean };
    if (typeof b.firstUse === 'boolean') b.firstUse = false;
  }
}

async function select(choice: BackendChoice, requireModule: (id: string) => unknown): Promise<SelectedBackend> {
  if (current !== null && current.requested === choice && tf.getBackend() === current.tfBackend) {
    return currentBackend() as SelectedBackend;
  }
  const candidates = choice === 'auto' ? CANDIDATES : CANDIDATES.filter((c) => c.name === choice);
  const skipped: { name: BackendName; package: string; reason: string }[] = [];
  for (const c of candidates) {
    try {
      await activate(c, requireModule);
    } catch (e) {
      if (e instanceof NotInstalled) {
        if (choice === 'auto') {
          skipped.push({ name: c.name, package: c.package, reason: `not installed (${e.message})` });
          continue;
        }
        throw new BackendUnavailableError(
          c.name,
          c.package,
          `backend ${c.name}: ${c.package} is not installed. Install it with: ${c.install}; or choose another backend (${BACKEND_CHOICES.join(', ')})`,
        );
      }
      throw e;
    }
    current = { name: c.name, package: c.package, tfBackend: c.tfBackend, skipped, requested: choice };
    return currentBackend() as SelectedBackend;
  }
  throw new BackendUnavailableError(
    'cpu',
    '@tensorflow/tfjs-backend-cpu',
    `backend auto: no backend could be loaded (${skipped.map((s) => `${s.package}: ${s.reason}`).join('; ')})`,
  );
}

/**
 * Loads and activates a backend (see the module comment). Idempotent; concurrent calls run one
 * after the other. Throws BackendUnavailableError when an explicit choice cannot be loaded.
 */
export function selectBackend(choice: BackendChoice = 'auto', options: SelectBackendOptions = {}): Promise<SelectedBackend> {
  const checked = parseBackendChoice(choice);
  const run = queue.then(
    () => select(checked, options.requireModule ?? nodeRequire),
    () => select(checked, options.requireModule ?? nodeRequire),
  );
  queue = run.catch(() => undefined);
  return run;
}

/**
 * Throws a clear error when no tfjs backend has been selected or registered, instead of tfjs's
 * "No backend found in registry". Model, training and evaluation functions call it.
 */
export function assertBackendReady(): void {
  if (current !== null) return;
  const engine = tf.engine() as unknown as { backendName?: string | null; registryFactory?: Record<string, unknown> };
  if (engine.backendName) return;
  if (engine.registryFactory && Object.keys(engine.registryFactory).length > 0) return;
  throw new HistoFedError(
    'NO_BACKEND',
    'no TensorFlow.js backend is loaded: call selectBackend() from @histofed/ml before building or training a model',
  );
}
