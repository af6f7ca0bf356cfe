import { ArgumentsHost, Catch, HttpException } from '@nestjs/common';
import { BaseExceptionFilter } from '@nestjs/core';
import type { HttpServer } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { STATUS_CODES } from 'node:http';
import type { JsonLogger } from '../logging/json-logger';
import { SampledLog } from '../logging/sampled-log';

/** The admin API answers JSON only: nothing may load, run or frame it. */
export const API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/**
 * The Swagger UI at /api/docs: its scripts are files under /api/docs/ (no inline script), but its
 * page has inline <style> blocks and style attributes, and it shows data: images.
 */
export const SWAGGER_UI_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

export function isSwaggerUiPath(path: string): boolean {
  return path === '/api/docs' || path.startsWith('/api/docs/');
}

/**
 * Headers on every HTTP response: no MIME sniffing, no framing (CSP frame-ancestors and the older
 * X-Frame-Options), no referrer, and a Content-Security-Policy (the dashboard sets its own, with
 * the hashes of its inline script and style). Express's X-Powered-By is switched off separately.
 */
export function securityHeaders(req: Request, res: Response, next: NextFunction): void {
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('Content-Security-Policy', isSwaggerUiPath(req.path) ? SWAGGER_UI_CSP : API_CSP);
  next();
}

/** The 4xx status of an error thrown by Express or its body parser (the "http-errors" shape), if it is one. */
export function clientErrorStatus(exception: unknown): number | undefined {
  if (exception instanceof HttpException || typeof exception !== 'object' || exception === null) return undefined;
  const status = (exception as { statusCode?: unknown; status?: unknown }).statusCode ?? (exception as { status?: unknown }).status;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : undefined;
}

/**
 * A client's mistake is not the server's error: a body over the limit (413), malformed JSON or an
 * unsupported encoding reach Nest as errors from the body parser, which Nest's default filter
 * answers correctly but logs at level error. This filter answers them the same way and logs a
 * warn line (status, method, path, reason), sampled; everything else goes to Nest's default handling.
 */
@Catch()
export class ClientErrorFilter extends BaseExceptionFilter {
  private readonly refusals: SampledLog;

  constructor(applicationRef: HttpServer, logger: JsonLogger) {
    super(applicationRef);
    // Anyone can send malformed bodies: at most 10 lines per status and minute, then a count.
    this.refusals = new SampledLog(logger, 'http');
  }

  override catch(exception: unknown, host: ArgumentsHost): void {
    const status = clientErrorStatus(exception);
    if (status === undefined) return super.catch(exception, host);
    const error = exception as { message?: unknown; expose?: unknown; type?: unknown };
    const message = error.expose === false || typeof error.message !== 'string' ? (STATUS_CODES[status] ?? 'Bad request') : error.message;
    const req = host.switchToHttp().getRequest<Request>();
    this.refusals.warn(`http ${status}`, 'request refused', {
      status,
      method: req?.method,
      path: typeof req?.path === 'string' ? req.path.slice(0, 200) : undefined,
      reason: message,
      ...(typeof error.type === 'string' ? { type: error.type } : {}),
    });
    super.catch(new HttpException({ statusCode: status, message }, status), host);
  }
}
