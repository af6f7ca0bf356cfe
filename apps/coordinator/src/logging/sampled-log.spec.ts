import { JsonLogger } from './json-logger';
import { SampledLog } from './sampled-log';

describe('sampled log', () => {
  it('logs at most N lines per kind and window, then says how many it suppressed', () => {
    const lines: { msg: string; fields: Record<string, unknown> }[] = [];
    const logger = { event: (_l: string, _c: string, msg: string, fields: Record<string, unknown>) => lines.push({ msg, fields }) } as unknown as JsonLogger;
    let t = 0;
    const log = new SampledLog(logger, 'gateway', 3, 1000, () => t);
    for (let i = 0; i < 10; i++) log.warn('origin', 'connection refused', { i });
    log.warn('cap', 'connection refused', {});
    expect(lines.filter((l) => l.fields['kind'] === 'origin')).toHaveLength(3);
    expect(lines.filter((l) => l.fields['kind'] === 'cap')).toHaveLength(1);
    t = 1500;
    log.warn('origin', 'connection refused', { i: 10 });
    expect(lines.at(-2)?.msg).toBe('origin: 7 more refusals were not logged');
    expect(lines.at(-1)?.fields['i']).toBe(10);
  });
});
