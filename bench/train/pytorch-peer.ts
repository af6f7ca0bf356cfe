import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

export const PYTHON = '/usr/bin/python3';

/** Installs Debian's python3-torch when it is missing (needs root, as on CI and dev machines). */
export function ensureTorch(say: (s: string) => void, withVision = false): void {
  const probe = spawnSync(PYTHON, ['-c', withVision ? 'import torch, torchvision' : 'import torch'], { encoding: 'utf8' });
  if (probe.status === 0) return;
  const packages = withVision ? ['python3-torch', 'python3-torchvision'] : ['python3-torch'];
  if (process.getuid?.() !== 0) {
    throw new Error(`PyTorch is missing for ${PYTHON}: run  apt-get install -y ${packages.join(' ')}  (as root), then again`);
  }
  say(`PyTorch is missing: installing Debian's ${packages.join(' ')} (once) ...`);
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...packages]]) {
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${r.status})`);
  }
}

export interface TorchRun {
  steps: number;
  seconds: number;
  imgPerSec: number;
  loss: number;
}

/** The PyTorch model in a long-lived python process; `run(n)` trains n steps and reports. */
export class PyTorchPeer {
  private readonly child: ChildProcess;
  private readonly lines: AsyncIterableIterator<string>;
  info: { torch: string; threads: number; parameters: number } | undefined;

  constructor(
    config: { kind: string; imageSize: number; batch: number; learningRate: number; threads?: number; channelsLast?: boolean; mode?: string },
    script = 'small_cnn_torch.py',
  ) {
    this.child = spawn(PYTHON, [join(__dirname, script), JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.lines = createInterface({ input: this.child.stdout! })[Symbol.asyncIterator]();
  }

  private async next<T>(): Promise<T> {
    const r = await this.lines.next();
    if (r.done) throw new Error('the PyTorch peer exited early');
    return JSON.parse(r.value) as T;
  }

  async ready(): Promise<void> {
    this.info = await this.next();
  }

  async run(steps: number): Promise<TorchRun> {
    this.child.stdin!.write(`${steps}\n`);
    return this.next<TorchRun>();
  }

  close(): void {
    this.child.stdin!.end('0\n');
  }
}
