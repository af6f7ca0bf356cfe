import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PayloadTooLargeException } from '@nestjs/common';
import { DASHBOARD_CSP, dashboardCsp } from '../dashboard/dashboard.controller';
import { API_CSP, SWAGGER_UI_CSP, clientErrorStatus, isSwaggerUiPath, securityHeaders } from './http-hardening';

describe('HTTP hardening', () => {
  it('sets nosniff, no framing and a CSP on every response; the Swagger UI gets its own', () => {
    const headers = (path: string) => {
      const set: Record<string, string> = {};
      let called = false;
      securityHeaders({ path } as never, { setHeader: (k: string, v: string) => (set[k.toLowerCase()] = v) } as never, () => (called = true));
      expect(called).toBe(true);
      return set;
    };
    expect(headers('/api/runs')).toEqual({
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'content-security-policy': API_CSP,
    });
    expect(headers('/api/docs')['content-security-policy']).toBe(SWAGGER_UI_CSP);
    expect(headers('/api/docs/swagger-ui-init.js')['content-security-policy']).toBe(SWAGGER_UI_CSP);
    expect(isSwaggerUiPath('/api/docs-json')).toBe(false);
    for (const csp of [API_CSP, SWAGGER_UI_CSP, DASHBOARD_CSP]) expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(SWAGGER_UI_CSP).toMatch(/script-src 'self'(;|$)/);
  });

  it('allows exactly the dashboard page\'s inline script and style, by hash', () => {
    const page = readFileSync(join(__dirname, '..', 'dashboard', 'dashboard.html'), 'utf8');
    const body = (tag: string) => new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(page)?.[1] ?? '';
    const hash = (s: string) => `'sha256-${createHash('sha256').update(s).digest('base64')}'`;
    // Scripts: its own origin (the charting library it serves itself) and its one inline script.
    expect(DASHBOARD_CSP).toContain(`script-src 'self' ${hash(body('script'))};`);
    expect(DASHBOARD_CSP).toContain(`style-src ${hash(body('style'))};`);
    expect(DASHBOARD_CSP).not.toMatch(/unsafe/);
    expect(dashboardCsp('<p>no inline code</p>')).toMatch(/script-src 'none'; style-src 'none'/);
  });

  it('treats the body parser\'s 4xx errors as client errors (logged at warn), not Nest exceptions or 5xx', () => {
    expect(clientErrorStatus(Object.assign(new Error('request entity too large'), { statusCode: 413, status: 413, type: 'entity.too.large' }))).toBe(413);
    expect(clientErrorStatus(Object.assign(new Error('unsupported charset'), { status: 415 }))).toBe(415);
    expect(clientErrorStatus(Object.assign(new Error('boom'), { statusCode: 500 }))).toBeUndefined();
    expect(clientErrorStatus(new PayloadTooLargeException())).toBeUndefined(); // Nest answers its own, without logging
    expect(clientErrorStatus(new Error('db'))).toBeUndefined();
    expect(clientErrorStatus('text')).toBeUndefined();
  });
});
