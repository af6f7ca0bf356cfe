import { BadRequestException, PipeTransform } from '@nestjs/common';
import { z } from 'zod';
import { describeZodError } from '@histofed/protocol';
import { UNSTORABLE_TEXT_MESSAGE, findUnstorableText } from './storable-text';

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
    if (unstorable !== null) throw new BadRequestException(`${this.what}: ${unstorable}: ${UNSTORABLE_TEXT_MESSAGE}`);
    const parsed = this.schema.safeParse(value ?? {});
    if (!parsed.success) throw new BadRequestException(`${this.what}: ${describeZodError(parsed.error)}`);
    return parsed.data;
  }
}
