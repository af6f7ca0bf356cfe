import { Controller, Get, Header, NotFoundException, Param, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { Response } from 'express';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const PAGE = readFileSync(join(__dirname, 'dashboard.html'), 'utf8');

/**
 * The files the page loads from the coordinator itself (no CDN: a hospital network may have no
 * internet): Apache ECharts (Apache-2.0), from node_modules, under a versioned name so it can be
 * cached for a year.
 */
const ECHARTS_DIR = dirname(require.resolve('echarts/package.json'));
const ECHARTS_VERSION = (JSON.parse(readFileSync(join(ECHARTS_DIR, 'package.json'), 'utf8')) as { version: string }).version;
export const DASHBOARD_ASSETS: Readonly<Record<string, string>> = {
  [`echarts-${ECHARTS_VERSION}.min.js`]: join(ECHARTS_DIR, 'dist', 'echarts.min.js'),
};
/** The page names the library by this path (dashboard.html's {{ECHARTS}}). */
export const ECHARTS_PATH = `/assets/echarts-${ECHARTS_VERSION}.min.js`;

/**
 * The dashboard's Content-Security-Policy: scripts only from its own origin (the charting library)
 * and its one inline script, its one inline style, both by SHA-256 (no 'unsafe-inline'); it may
 * only fetch from its own origin, and nothing may frame it. Built from the page itself, so editing
 * the page cannot leave the hashes behind.
 */
export function dashboardCsp(page: string): string {
  const hashes = (tag: 'script' | 'style') =>
    [...page.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))]
      .map((m) => `'sha256-${createHash('sha256').update(m[1], 'utf8').digest('base64')}'`)
      .join(' ');
  const external = /<script src="\/[^"]*"><\/script>/.test(page);
  const scripts = [external ? "'self'" : '', hashes('script')].filter(Boolean).join(' ');
  return [
    "default-src 'none'",
    `script-src ${scripts || "'none'"}`,
    `style-src ${hashes('style') || "'none'"}`,
    "connect-src 'self'",
    "img-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
}

const SERVED_PAGE = PAGE.replace('{{ECHARTS}}', ECHARTS_PATH);
export const DASHBOARD_CSP = dashboardCsp(SERVED_PAGE);

/**
 * The administrator's page: sites (approve, revoke, delete), runs (create from the run config's
 * schema, start, download models), live progress pushed over GET /api/events, and plots. The admin
 * token is typed in (or handed over as /#token=…) and kept in the browser's session storage only.
 */
@ApiExcludeController()
@Controller()
export class DashboardController {
  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Cache-Control', 'no-store')
  @Header('Content-Security-Policy', DASHBOARD_CSP)
  page(): string {
    return SERVED_PAGE;
  }

  /** The page's static files: a versioned name, so a year's caching is safe. */
  @Get('assets/:file')
  asset(@Param('file') file: string, @Res() res: Response): void {
    const path = Object.hasOwn(DASHBOARD_ASSETS, file) ? DASHBOARD_ASSETS[file] : undefined;
    if (!path) throw new NotFoundException(`no asset ${file}`);
    res.setHeader('Content-Type', 'text/javascript; charset=utf-8');
    res.setHeader('Cache-Control', 'public, max-age=31536000, immutable');
    res.sendFile(path, { maxAge: 365 * 24 * 3600 * 1000, immutable: true });
  }
}
