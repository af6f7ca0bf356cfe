type Level = 'debug' | 'info' | 'warn' | 'error';

/** Structured logs, one JSON object per line (same shape as the coordinator's). */
export class SiteLogger {
  constructor(private readonly siteId: string) {}

  event(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
    const line = JSON.stringify({ time: new Date().toISOString(), level, component: 'site', siteId: this.siteId, msg, ...fields });
    (level === 'error' ? process.stderr : process.stdout).write(line + '\n');
  }
}
