/** Shared helpers of the benchmarks: figures on stdout, one JSON line with --json. */
import * as os from 'node:os';

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** Progress and human-readable figures go to stderr when --json is given, so stdout is the JSON line. */
export function reporter(json: boolean) {
  return {
    say: (text: string) => (json ? process.stderr : process.stdout).write(text + '\n'),
    result: (value: unknown) => {
      if (json) process.stdout.write(JSON.stringify(value) + '\n');
    },
  };
}

/**
 * Runs a benchmark's command line: `main` with the parsed options; an error (in parsing or in the
 * benchmark) is printed with its stack and sets a failing exit code.
 */
export function runBench<O>(command: { action(fn: (o: O) => unknown): { parseAsync(): Promise<unknown> } }, main: (o: O) => Promise<void>): void {
  const fail = (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  };
  command
    .action((o: O) => main(o).catch(fail))
    .parseAsync()
    .catch(fail);
}

/** "wall time N s (C cores[, shared with other load: timings inflated])": the closing line of a benchmark. */
export function wallTimeLine(seconds: number): string {
  const cores = os.cpus().length;
  return `wall time ${seconds.toFixed(0)} s (${cores} cores${os.loadavg()[0] > cores ? ', shared with other load: timings inflated' : ''})`;
}
