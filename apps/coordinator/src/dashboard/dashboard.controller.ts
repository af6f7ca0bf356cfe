import { Controller, Get, Header } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const PAGE = readFileSync(join(__dirname, 'dashboard.html'), 'utf8');

/**
 * The dashboard's Content-Security-Policy: its one inline script and one inline style are allowed
 * by their SHA-256 (no 'unsafe-inline'), it may only fetch from its own origin, and nothing may
 * frame it. Built from the page itself, so editing the page cannot leave the hashes behind.
 */
export function dashboardCsp(page: string): string {
  const hashes = (tag: 'script' | 'style') =>
    [...page.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))]
      .map((m) => `'sha256-${createHash('sha256').update(m[1], 'utf8').digest('base64')}'`)
      .join(' ');
  return [
    "default-src 'none'",
    `script-src ${hashes('script') || "'none'"}`,
    `style-src ${hashes('style') || "'none'"}`,
    "connect-src 'self'",
    "img-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
}

export const DASHBOARD_CSP = dashboardCsp(PAGE);

/**
 * The live view for administrators: one static page that polls the admin API (with the token the
 * administrator types in; kept in the browser's session storage only) every 2 seconds.
 */
@ApiExcludeController()
@Controller()
export class DashboardController {
  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Cache-Control', 'no-store')
  @Header('Content-Security-Policy', DASHBOARD_CSP)
  page(): string {
    return PAGE;
  }
}
