import { ExecutionContext, Injectable } from '@nestjs/common';
import { ThrottlerGuard, ThrottlerLimitDetail, ThrottlerModuleOptions } from '@nestjs/throttler';
import type { Request, Response } from 'express';
import type { EnrollmentLimits } from '../config/coordinator-config';

/** The route anyone may write to; it has its own, lower, per-address limit. */
export const ENROLL_PATH = '/api/enroll';

const isEnroll = (context: ExecutionContext): boolean => context.switchToHttp().getRequest<Request>().path === ENROLL_PATH;

/**
 * Per-address request limits on the HTTP API (issue 13), counted in memory per client address
 * (IPv6 addresses per /64, so one host cannot rotate through its prefix):
 * - `requests`: every route, `requestsPerMinute` per address (the dashboard polls a few routes
 *   every few seconds; a flood is answered 429 with Retry-After before any handler or database runs);
 * - `enroll`: POST /api/enroll only, `perMinute` per address (each costs a signature check and a
 *   database read).
 * Behind a reverse proxy every request comes from the proxy's address: rate-limit there instead
 * (README, "Deployment"). socket.io connections are bounded separately (connection-limits.ts).
 */
export function rateLimitOptions(limits: EnrollmentLimits): ThrottlerModuleOptions {
  return {
    ipv6SubnetPrefix: 64,
    // One budget per address across all routes (the default key is per route and handler).
    generateKey: (_context, tracker, throttlerName) => `${throttlerName}:${tracker}`,
    errorMessage: 'too many requests from this address: try again in a minute',
    throttlers: [
      { name: 'requests', ttl: 60_000, limit: limits.requestsPerMinute },
      { name: 'enroll', ttl: 60_000, limit: limits.perMinute, skipIf: (context) => !isEnroll(context) },
    ],
  };
}

/**
 * ThrottlerGuard names its headers after the throttler (Retry-After-enroll); clients and proxies
 * know the standard Retry-After (seconds), so a refusal carries that too.
 */
@Injectable()
export class RateLimitGuard extends ThrottlerGuard {
  protected override async throwThrottlingException(context: ExecutionContext, detail: ThrottlerLimitDetail): Promise<void> {
    const res = context.switchToHttp().getResponse<Response>();
    if (!res.headersSent) res.setHeader('Retry-After', String(Math.max(1, Math.ceil(detail.timeToBlockExpire))));
    return super.throwThrottlingException(context, detail);
  }
}
