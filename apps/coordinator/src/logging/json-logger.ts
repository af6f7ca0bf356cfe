import { LoggerService } from '@nestjs/common';

type Level = 'debug' | 'info' | 'warn' | 'error';

/**
 * Structured logs: one JSON object per line on stdout ({time, level, context, msg, ...fields}).
 * Nest's own messages go through the LoggerService methods; HistoFed code calls `event` with fields.
 */
export class JsonLogger implements LoggerService {
  constructor(
    private readonly component = 'coordinator',
    private readonly minLevel: Level = 'info',
  ) {}

  event(level: Level, context: string, msg: string, fields: Record<string, unknown> = {}): void {
    const order: Level[] = ['debug', 'info', 'warn', 'error'];
    if (order.indexOf(level) < order.indexOf(this.minLevel)) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level, component: this.component, context, msg, ...fields });
    (level === 'error' ? process.stderr : process.stdout).write(line + '\n');
  }

  log(message: unknown, context?: string): void {
    this.event('info', context ?? 'nest', String(message));
  }
  error(message: unknown, trace?: string, context?: string): void {
    this.event('error', context ?? 'nest', String(message), trace ? { trace } : {});
  }
  warn(message: unknown, context?: string): void {
    this.event('warn', context ?? 'nest', String(message));
  }
  debug(message: unknown, context?: string): void {
    this.event('debug', context ?? 'nest', String(message));
  }
  verbose(message: unknown, context?: string): void {
    this.event('debug', context ?? 'nest', String(message));
  }
}

export const LOGGER = Symbol('LOGGER');
