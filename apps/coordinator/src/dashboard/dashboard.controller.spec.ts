import { NotFoundException } from '@nestjs/common';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DASHBOARD_ASSETS, DASHBOARD_CSP, DashboardController, ECHARTS_PATH, dashboardCsp } from './dashboard.controller';

describe('the dashboard page (issue 17)', () => {
  const page = new DashboardController().page();

  it('loads its charting library from the coordinator itself, never from another origin', () => {
    expect(page).toContain(`<script src="${ECHARTS_PATH}"></script>`);
    expect(page).not.toMatch(/\{\{ECHARTS\}\}/);
    expect(page).not.toMatch(/(src|href)="(https?:)?\/\//);
    expect(ECHARTS_PATH).toMatch(/^\/assets\/echarts-\d+\.\d+\.\d+\.min\.js$/);
    expect(Object.keys(DASHBOARD_ASSETS)).toEqual([ECHARTS_PATH.slice('/assets/'.length)]);
    for (const file of Object.values(DASHBOARD_ASSETS)) expect(existsSync(file)).toBe(true);
  });

  it('has a strict CSP: scripts from itself and its one inline script by hash, styles by hash, nothing inline otherwise', () => {
    expect(DASHBOARD_CSP).toMatch(/^default-src 'none'; script-src 'self' 'sha256-[A-Za-z0-9+/=]+'; style-src 'sha256-[A-Za-z0-9+/=]+'; connect-src 'self'; /);
    expect(DASHBOARD_CSP).not.toMatch(/unsafe|\*|https?:/);
    expect(dashboardCsp('<script>a()</script>')).toMatch(/script-src 'sha256-[^']+'; /);
    expect(page).not.toMatch(/ on[a-z]+=/i); // no inline event handler attributes (CSP would block them anyway)
    expect(page).not.toMatch(/ style="/); // no style attributes
  });

  it('serves the library with a year of caching, and nothing else from /assets', () => {
    const headers: Record<string, string> = {};
    let sent: { path: string; options: unknown } | undefined;
    const res = { setHeader: (k: string, v: string) => (headers[k.toLowerCase()] = v), sendFile: (path: string, options: unknown) => (sent = { path, options }) };
    const c = new DashboardController();
    c.asset(ECHARTS_PATH.slice('/assets/'.length), res as never);
    expect(headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(headers['content-type']).toMatch(/^text\/javascript/);
    expect(readFileSync(sent!.path, 'utf8').length).toBeGreaterThan(100_000);
    for (const bad of ['../package.json', 'echarts.js', 'constructor', '__proto__', 'toString']) expect(() => c.asset(bad, res as never)).toThrow(NotFoundException);
  });

  it('keeps the admin token out of URLs it requests: it sends it in the Authorization header', () => {
    expect(page).toMatch(/authorization: 'Bearer ' \+ token/);
    expect(page).not.toMatch(/[?&]token=/);
    expect(page).toMatch(/history\.replaceState\(null, '', location\.pathname \+ location\.search\)/);
    // The page's source has the placeholder the controller fills in.
    expect(readFileSync(join(__dirname, 'dashboard.html'), 'utf8')).toContain('<script src="{{ECHARTS}}"></script>');
  });
});
