import { BadRequestException, PipeTransform } from '@nestjs/common';
import { z } from 'zod';
import { describeZodError } from '@histofed/protocol';
import { UNSTORABLE_TEXT_MESSAGE, findUnstorableText } from './storable-text';

/** One problem of a refused body, at its field (`path`, [] for the body itself): the dashboard shows it there. */
export interface FieldIssue {
  readonly path: (string | number)[];
  readonly message: string;
}

/** The most field issues a 400 lists (the message names the first five). */
export const MAX_FIELD_ISSUES = 50;

/**
 * A 400 whose body is Nest's usual `{statusCode, error, message}` (the message names the fields
 * that are wrong) plus `issues`, each problem at its field, for forms.
 */
export function badBody(message: string, issues: readonly FieldIssue[]): BadRequestException {
  return new BadRequestException({ statusCode: 400, error: 'Bad Request', message, issues: issues.slice(0, MAX_FIELD_ISSUES) });
}

/**
 * Validates a request body against a zod schema; a 400 names the fields that are wrong. Any string
 * or key the database could not store (NUL, a lone surrogate) is refused first, wherever it is.
 */
export class ZodBodyPipe<S extends z.ZodType> implements PipeTransform<unknown, z.infer<S>> {
  constructor(
    private readonly schema: S,
    private readonly what: string,
  ) {}

  transform(value: unknown): z.infer<S> {
    const unstorable = findUnstorableText(value);
    if (unstorable !== null) {
      throw badBody(`${this.what}: ${unstorable}: ${UNSTORABLE_TEXT_MESSAGE}`, [{ path: unstorable === '(root)' ? [] : unstorable.split('.'), message: UNSTORABLE_TEXT_MESSAGE }]);
    }
    const parsed = this.schema.safeParse(value ?? {});
    if (!parsed.success) {
      throw badBody(
        `${this.what}: ${describeZodError(parsed.error)}`,
        parsed.error.issues.map((i) => ({ path: i.path.map((p) => (typeof p === 'symbol' ? String(p) : p)), message: i.message })),
      );
    }
    return parsed.data;
  }
}
