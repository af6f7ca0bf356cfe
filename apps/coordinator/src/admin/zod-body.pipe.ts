import { BadRequestException, PipeTransform } from '@nestjs/common';
import { z } from 'zod';
import { describeZodError } from '@histofed/protocol';

/** Validates a request body against a zod schema; a 400 names the fields that are wrong. */
export class ZodBodyPipe<S extends z.ZodType> implements PipeTransform<unknown, z.infer<S>> {
  constructor(
    private readonly schema: S,
    private readonly what: string,
  ) {}

  transform(value: unknown): z.infer<S> {
    const parsed = this.schema.safeParse(value ?? {});
    if (!parsed.success) throw new BadRequestException(`${this.what}: ${describeZodError(parsed.error)}`);
    return parsed.data;
  }
}
