import type { JsonLogger } from './json-logger';

/**
 * Logs refusals of unauthenticated peers without letting them flood the log: per kind, at most
 * `perWindow` lines in each window of `windowMs`; at the first refusal of the next window one line
 * says how many were suppressed. A peer can make us count, not write.
 */
export class SampledLog {
  private readonly windows = new Map<string, { start: number; logged: number; suppressed: number }>();

  constructor(
    private readonly logger: JsonLogger,
    private readonly context: string,
    private readonly perWindow = 10,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  warn(kind: string, msg: string, fields: Record<string, unknown>): void {
    const t = this.now();
    let w = this.windows.get(kind);
    if (!w || t - w.start >= this.windowMs) {
      if (w && w.suppressed > 0) {
        this.logger.event('warn', this.context, `${kind}: ${w.suppressed} more refusals were not logged`, { kind, suppressed: w.suppressed, windowSeconds: this.windowMs / 1000 });
      }
      w = { start: t, logged: 0, suppressed: 0 };
      this.windows.set(kind, w);
      // Kinds are few (fixed strings), but keep the map bounded whatever callers pass.
      if (this.windows.size > 64) this.windows.delete(this.windows.keys().next().value as string);
    }
    if (w.logged < this.perWindow) {
      w.logged++;
      this.logger.event('warn', this.context, msg, { kind, ...fields });
    } else {
      w.suppressed++;
    }
  }
}
