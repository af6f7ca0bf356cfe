import { ConnectionLimits } from './connection-limits';

describe('connection limits', () => {
  it('refuses a connection over the per-address cap and accepts again once one closes', () => {
    const l = new ConnectionLimits({ maxConnections: 10, maxConnectionsPerAddress: 2 });
    expect(l.refusal('1.2.3.4')).toBeNull();
    l.opened('1.2.3.4');
    l.opened('1.2.3.4');
    expect(l.refusal('1.2.3.4')).toBe('too many connections from 1.2.3.4 (2 open, at most 2)');
    expect(l.refusal('5.6.7.8')).toBeNull();
    l.closed('1.2.3.4');
    expect(l.refusal('1.2.3.4')).toBeNull();
    expect(l.openFrom('1.2.3.4')).toBe(1);
  });

  it('refuses any connection over the total cap, and ignores closes it never counted', () => {
    const l = new ConnectionLimits({ maxConnections: 3, maxConnectionsPerAddress: 3 });
    for (const a of ['a', 'b', 'c']) l.opened(a);
    expect(l.refusal('d')).toBe('too many connections (3 open, at most 3)');
    l.closed('zzz');
    expect(l.open).toBe(3);
    l.closed('a');
    expect(l.refusal('d')).toBeNull();
  });
});
