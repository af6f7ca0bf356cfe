import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminTokenWeakness, configWarnings, isLoopbackHost, loadCoordinatorConfig } from './coordinator-config';

const STRONG = 'q7Vx2mK9pL4wR8tZ3nB6cJ1h';

describe('coordinator configuration', () => {
  it('takes flags over environment variables and defaults the rest', () => {
    const c = loadCoordinatorConfig({ HISTOFED_PORT: '9000', HISTOFED_AUTO_APPROVE: 'true', DATABASE_URL: '' }, { port: '0', testData: '/d', simulateSites: '3' });
    expect(c.port).toBe(0);
    expect(c.autoApproveSites).toBe(true);
    expect(c.databaseUrl).toBeUndefined();
    expect(c.testData).toEqual({ dir: '/d', simulate: { sites: 3, seed: 1, testFraction: 0.25 } });
    expect(c.adminTokenGenerated).toBe(true);
    expect(c.adminToken).toMatch(/^[0-9a-f]{48}$/);
    // The test patients' clinical table (fusion models), from the flag or the environment.
    expect(loadCoordinatorConfig({ HISTOFED_TEST_CLINICAL: '/c.csv' }, { testData: '/d' }).testData).toEqual({ dir: '/d', clinicalCsv: '/c.csv' });
  });

  it('keeps a given admin token and a PostgreSQL URL', () => {
    const c = loadCoordinatorConfig({ HISTOFED_ADMIN_TOKEN: STRONG, DATABASE_URL: 'postgres://u:p@h:5432/db' });
    expect(c.adminToken).toBe(STRONG);
    expect(c.adminTokenGenerated).toBe(false);
    expect(c.databaseUrl).toBe('postgres://u:p@h:5432/db');
  });

  it('names the flag or variable that is wrong', () => {
    expect(() => loadCoordinatorConfig({}, { port: 'eighty' })).toThrow(/--port \/ HISTOFED_PORT: /);
    expect(() => loadCoordinatorConfig({ DATABASE_URL: 'mysql://x' })).toThrow(/--database-url \/ DATABASE_URL: must start with postgres:\/\//);
    expect(() => loadCoordinatorConfig({ HISTOFED_ADMIN_TOKEN: 'short' })).toThrow(/HISTOFED_ADMIN_TOKEN: must be at least 16 characters/);
    expect(() => loadCoordinatorConfig({}, { testData: '/d', simulateSites: '0' })).toThrow(/--simulate-sites must be a positive integer/);
  });

  it('refuses placeholder and low-entropy admin tokens, naming the variable and never echoing the token', () => {
    // The value committed in .env.example (docker compose) must never start a coordinator.
    const example = /^HISTOFED_ADMIN_TOKEN=(.*)$/m.exec(readFileSync(join(__dirname, '..', '..', '..', '..', '.env.example'), 'utf8'))?.[1];
    expect(example).toBeTruthy();
    const weak = [
      example as string,
      'change-me-to-a-long-random-token', // the former docker-compose.yml value
      'changeme-changeme-changeme',
      'CHANGE_ME_PLEASE_0123456789',
      'my-super-secret-value-2026',
      'token-0123456789abcdefghij',
      'x'.repeat(40), // one character repeated
      'abababababababababababab', // two characters
      '0123456789abcdef0123456789abcdef0123456789abcdef', // a repeated sequence
      'abcdefghijklmnopqrstuvwxyz0123456789', // runs
      'Tr0ub4dor&3Tr0ub4dor&3', // a short word, repeated
      randomBytes(8).toString('hex'), // 64 bits
    ];
    for (const token of weak) {
      let message = '';
      try {
        loadCoordinatorConfig({ HISTOFED_ADMIN_TOKEN: token });
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toMatch(/--admin-token \/ HISTOFED_ADMIN_TOKEN: /);
      expect(message).toMatch(/openssl rand -hex 32/);
      expect(message).not.toContain(token);
      expect(() => loadCoordinatorConfig({}, { adminToken: token })).toThrow(/HISTOFED_ADMIN_TOKEN/);
    }
    expect(adminTokenWeakness('change-me')).toMatch(/at least 16 characters/);
    expect(adminTokenWeakness('please-change-me-now-7Kq')).toMatch(/placeholder \(it contains "changeme"\)/);
    expect(adminTokenWeakness('x'.repeat(40))).toMatch(/only 1 distinct characters/);
    expect(adminTokenWeakness('abcdefghijklmnopqrstuvwxyz0123456789')).toMatch(/bits of entropy \(at least 96/);
  });

  it('accepts random tokens: openssl rand -hex 16/24/32, -base64 18/32', () => {
    for (let i = 0; i < 300; i++) {
      for (const token of [16, 24, 32].map((n) => randomBytes(n).toString('hex')).concat([18, 32].map((n) => randomBytes(n).toString('base64')))) {
        // A base64 token may spell a placeholder word by chance (about 1 in 200,000): skip those.
        if (/changeme|replaceme|placeholder|example|secret|password|passwd|token|admin|default|insecure|histofed|letmein|qwerty|opensslrand/i.test(token)) continue;
        expect([token, adminTokenWeakness(token)]).toEqual([token, null]);
      }
    }
    expect(loadCoordinatorConfig({ HISTOFED_ADMIN_TOKEN: STRONG }).adminToken).toBe(STRONG);
  });

  it('warns (once, structured) when auto-approve is on while listening beyond loopback', () => {
    const open = configWarnings({ host: '0.0.0.0', port: 8080, autoApproveSites: true });
    expect(open).toHaveLength(1);
    expect(open[0].msg).toMatch(/^AUTO-APPROVE IS ON WHILE LISTENING BEYOND THIS MACHINE/);
    expect(open[0].fields).toEqual(expect.objectContaining({ warning: 'auto-approve-non-loopback', host: '0.0.0.0', port: 8080, autoApproveSites: true }));
    expect(configWarnings({ host: '::', port: 1, autoApproveSites: true })).toHaveLength(1);
    expect(configWarnings({ host: '10.1.2.3', port: 1, autoApproveSites: true })).toHaveLength(1);
    expect(configWarnings({ host: '127.0.0.1', port: 8080, autoApproveSites: true })).toEqual([]);
    expect(configWarnings({ host: '0.0.0.0', port: 8080, autoApproveSites: false })).toEqual([]);
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', 'LOCALHOST', '::1', '[::1]', '::ffff:127.0.0.1']) expect([h, isLoopbackHost(h)]).toEqual([h, true]);
    for (const h of ['0.0.0.0', '::', '', '10.0.0.1', 'coordinator.example', '128.0.0.1', '::ffff:10.0.0.1']) expect([h, isLoopbackHost(h)]).toEqual([h, false]);
  });
});
