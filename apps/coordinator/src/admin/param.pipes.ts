import { BadRequestException, PipeTransform } from '@nestjs/common';
import { siteIdSchema } from '@histofed/protocol';

/** Largest round number the database holds (PostgreSQL integer). */
export const MAX_ROUND = 2 ** 31 - 1;

/**
 * A round number in a path: decimal digits from 0 to MAX_ROUND. ParseIntPipe lets
 * 100000000000000000000 through as 1e20, which the database then refuses with a 500.
 */
export class RoundParamPipe implements PipeTransform<string, number> {
  transform(value: string): number {
    const n = /^\d{1,10}$/.test(value) ? Number(value) : NaN;
    if (!Number.isInteger(n) || n > MAX_ROUND) throw new BadRequestException(`round must be a whole number from 0 to ${MAX_ROUND}`);
    return n;
  }
}

/** A site id in a path, checked as enrollment checks it (so "%00" or a lone surrogate is a 400, not a database error). */
export class SiteIdParamPipe implements PipeTransform<string, string> {
  transform(value: string): string {
    const parsed = siteIdSchema.safeParse(value);
    if (!parsed.success) throw new BadRequestException(parsed.error.issues[0]?.message ?? 'invalid site id');
    return parsed.data;
  }
}
