import { loadCoordinatorConfig } from './coordinator-config';

describe('coordinator configuration', () => {
  it('takes flags over environment variables and defaults the rest', () => {
    const c = loadCoordinatorConfig({ HISTOFED_PORT: '9000', HISTOFED_AUTO_APPROVE: 'true', DATABASE_URL: '' }, { port: '0', testData: '/d', simulateSites: '3' });
    expect(c.port).toBe(0);
    expect(c.autoApproveSites).toBe(true);
    expect(c.databaseUrl).toBeUndefined();
    expect(c.testData).toEqual({ dir: '/d', simulate: { sites: 3, seed: 1, testFraction: 0.25 } });
    expect(c.adminTokenGenerated).toBe(true);
    expect(c.adminToken).toMatch(/^[0-9a-f]{48}$/);
  });

  it('keeps a given admin token and a PostgreSQL URL', () => {
    const c = loadCoordinatorConfig({ HISTOFED_ADMIN_TOKEN: 'x'.repeat(20), DATABASE_URL: 'postgres://u:p@h:5432/db' });
    expect(c.adminToken).toBe('x'.repeat(20));
    expect(c.adminTokenGenerated).toBe(false);
    expect(c.databaseUrl).toBe('postgres://u:p@h:5432/db');
  });

  it('names the flag or variable that is wrong', () => {
    expect(() => loadCoordinatorConfig({}, { port: 'eighty' })).toThrow(/--port \/ HISTOFED_PORT: /);
    expect(() => loadCoordinatorConfig({ DATABASE_URL: 'mysql://x' })).toThrow(/--database-url \/ DATABASE_URL: must start with postgres:\/\//);
    expect(() => loadCoordinatorConfig({ HISTOFED_ADMIN_TOKEN: 'short' })).toThrow(/HISTOFED_ADMIN_TOKEN: must be at least 16 characters/);
    expect(() => loadCoordinatorConfig({}, { testData: '/d', simulateSites: '0' })).toThrow(/--simulate-sites must be a positive integer/);
  });
});
