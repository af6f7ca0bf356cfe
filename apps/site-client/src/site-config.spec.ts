import { loadSiteConfig } from './site-config';

const base = { coordinator: 'http://127.0.0.1:8080', siteId: 'hospital-a', data: '/data/breakhis' };

describe('site configuration', () => {
  it('parses flags, with environment variables as fallback', () => {
    const c = loadSiteConfig({ HISTOFED_BACKEND: 'wasm', HISTOFED_COORDINATOR_URL: 'http://ignored' }, { ...base, simulate: '2/3', seed: '7' });
    expect(c.coordinatorUrl).toBe('http://127.0.0.1:8080');
    expect(c.backend).toBe('wasm');
    expect(c.simulate).toEqual({ index: 1, of: 3, seed: 7, testFraction: 0.25, partition: 'iid' });
    expect(c.cacheDir).toMatch(/histofed/);
    expect(c.trainWorkers).toBe('auto');
    expect(loadSiteConfig({ HISTOFED_TRAIN_WORKERS: '3' }, base).trainWorkers).toBe(3);
    expect(() => loadSiteConfig({}, { ...base, trainWorkers: 'many' })).toThrow(/--train-workers must be "auto" or an integer/);
    expect(loadSiteConfig({}, { ...base, cache: false }).cacheDir).toBeNull();
    expect(loadSiteConfig({}, { ...base, simulate: '1/2', partition: 'label-skew', alpha: '0.1' }).simulate).toEqual(
      expect.objectContaining({ partition: 'label-skew', alpha: 0.1 }),
    );
    expect(c.stateDir).toMatch(/\.histofed\/site-hospital-a$/);
    expect(loadSiteConfig({ HISTOFED_SITE_ID: 'b', HISTOFED_COORDINATOR_URL: 'https://c/', HISTOFED_SITE_DATA: '/d' }, {}).coordinatorUrl).toBe('https://c');
  });

  it('names the flag that is missing or wrong', () => {
    expect(() => loadSiteConfig({}, { ...base, coordinator: undefined })).toThrow(/--coordinator URL .* is required/);
    expect(() => loadSiteConfig({}, { ...base, coordinator: 'ftp://x' })).toThrow(/--coordinator must be an http\(s\) URL/);
    expect(() => loadSiteConfig({}, { ...base, siteId: 'Bad Site' })).toThrow(/--site-id "Bad Site"/);
    expect(() => loadSiteConfig({}, { ...base, data: undefined })).toThrow(/--data DIR/);
    expect(() => loadSiteConfig({}, { ...base, simulate: '4/3' })).toThrow(/--simulate 4\/3: I must be between 1 and N/);
    expect(() => loadSiteConfig({}, { ...base, simulate: 'half' })).toThrow(/--simulate must look like I\/N/);
    expect(() => loadSiteConfig({}, { ...base, validationFraction: '1.5' })).toThrow(/--validation-fraction/);
    expect(() => loadSiteConfig({}, { ...base, seed: 'x', simulate: '1/2' })).toThrow(/--seed must be a number, got "x"/);
    expect(() => loadSiteConfig({}, { ...base, simulate: '1/2', partition: 'random' })).toThrow(/--partition must be one of iid, label-skew, magnification, stain/);
    expect(() => loadSiteConfig({}, { ...base, simulate: '1/2', alpha: '1' })).toThrow(/--alpha applies to --partition label-skew only/);
    expect(() => loadSiteConfig({}, { ...base, partition: 'stain' })).toThrow(/need --simulate/);
  });
});
